//! A Guard's admission-relevant settings, compiled once per configuration load.

use std::fmt;
use std::sync::Arc;

use crate::api::{Bounds, DelegateRule, Exemptions, GuardSpec, IgnoreRule, Mode, RenderSpec};
use crate::drift::IgnorePath;
use crate::source::LinkTemplate;

use super::DesiredError;

/// `namespace/name` of a Guard.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GuardId {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl fmt::Display for GuardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// An ignore rule with its pointers parsed.
#[derive(Debug, Clone)]
struct CompiledIgnore {
    rule: IgnoreRule,
    pointers: Vec<IgnorePath>,
}

impl CompiledIgnore {
    fn compile(guard: &GuardId, rule: IgnoreRule) -> Result<Self, DesiredError> {
        let pointers = rule
            .json_pointers
            .iter()
            .map(|p| {
                IgnorePath::parse(p).map_err(|e| DesiredError::InvalidIgnore {
                    guard: guard.to_string(),
                    pointer: p.clone(),
                    reason: e.to_string(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(CompiledIgnore { rule, pointers })
    }

    fn selects(&self, group: &str, kind: &str, namespace: Option<&str>, name: &str) -> bool {
        let matches = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
        matches(&self.rule.group, group)
            && matches(&self.rule.kind, kind)
            && matches(&self.rule.name, name)
            && matches(&self.rule.namespace, namespace.unwrap_or(""))
    }
}

/// How long a break-glass lasts when the Guard sets no `maxDuration`.
pub const DEFAULT_BREAK_GLASS: std::time::Duration = std::time::Duration::from_secs(3600);

/// Who may break glass on a Guard's objects, and for how long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakGlassPolicy {
    /// Groups whose members may.
    pub groups: Vec<String>,
    /// How long an object stays detached.
    pub max_duration: std::time::Duration,
}

/// What admission needs to know about a Guard.
#[derive(Debug, Clone)]
pub struct GuardPolicy {
    /// Identity.
    pub id: GuardId,
    /// Admission mode.
    pub mode: Mode,
    /// Repository URL as configured (shown in messages).
    pub source_url: String,
    /// Directory inside the repository.
    pub path: String,
    /// Namespace given to namespaced objects that declare none.
    pub target_namespace: String,
    /// Identities whose edits are allowed.
    pub exemptions: Exemptions,
    /// How the path is rendered.
    pub render: RenderSpec,
    /// Break-glass, when the Guard allows it.
    pub break_glass: Option<BreakGlassPolicy>,
    /// `prune.allowEmpty`: an empty render is intended (else it is an error).
    pub allow_empty: bool,
    /// An empty render (without `allow_empty`) fails the load. The leader's reconcile turns
    /// this off: its plan reports an empty render as Ready=False/EmptyRender and prunes nothing.
    pub reject_empty: bool,
    /// The Guard's creationTimestamp (RFC 3339) when known: of two Guards declaring one object
    /// that no live annotation assigns yet, the one created first owns it.
    pub created: Option<String>,
    ignore: Vec<CompiledIgnore>,
    delegate: Vec<CompiledDelegate>,
    /// Links to Git: the GitSource's web URL template (see [`GuardPolicy::with_links`]).
    links: Option<LinkTemplate>,
    /// The delegate rules, shared by every [`ObjectDelegation`] of this Guard.
    delegate_rules: Arc<[DelegateRule]>,
    /// Changes whenever the spec or source URL does: desired sets are cached per (Guard,
    /// commit, fingerprint), so editing `ignore` or `path` without a new commit takes effect.
    fingerprint: u64,
}

impl GuardPolicy {
    /// Compile a Guard spec; fails on malformed ignore pointers.
    pub fn new(id: GuardId, spec: &GuardSpec, source_url: &str) -> Result<Self, DesiredError> {
        let ignore = spec
            .ignore
            .iter()
            .map(|rule| CompiledIgnore::compile(&id, rule.clone()))
            .collect::<Result<Vec<_>, DesiredError>>()?;
        let delegate = spec
            .delegate
            .iter()
            .enumerate()
            .map(|(index, rule)| compile_delegate(&id, index, rule))
            .collect::<Result<Vec<_>, DesiredError>>()?;
        let fingerprint = {
            use std::hash::{Hash, Hasher};
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            serde_json::to_string(spec).unwrap_or_default().hash(&mut hasher);
            source_url.hash(&mut hasher);
            hasher.finish()
        };
        let delegate_rules: Arc<[DelegateRule]> = delegate.iter().map(|c| c.rule.clone()).collect();
        Ok(GuardPolicy {
            fingerprint,
            target_namespace: spec.target_namespace.clone().unwrap_or_else(|| "default".to_owned()),
            id,
            mode: spec.mode,
            source_url: source_url.to_owned(),
            path: spec.path.clone(),
            exemptions: spec.exemptions.clone(),
            render: spec.render.clone(),
            allow_empty: spec.prune.allow_empty,
            reject_empty: true,
            created: None,
            break_glass: spec.break_glass.as_ref().map(|b| BreakGlassPolicy {
                groups: b.groups.clone(),
                max_duration: b.max_duration.as_ref().map_or(DEFAULT_BREAK_GLASS, |d| d.0),
            }),
            ignore,
            delegate,
            links: None,
            delegate_rules,
        })
    }

    /// Links to Git for this Guard's objects: its GitSource's `webUrl` template, or the one
    /// derived from the source URL ([`LinkTemplate::for_source`]; None: no links). Part of the
    /// fingerprint, so a changed template rebuilds the desired set (whose links are bound to
    /// the revision once, [`super::DesiredSet::links`]).
    pub fn with_links(mut self, links: Option<LinkTemplate>) -> Self {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        self.fingerprint.hash(&mut hasher);
        links.hash(&mut hasher);
        self.fingerprint = hasher.finish();
        self.links = links;
        self
    }

    /// The link template, when the Guard's source has one.
    pub fn links(&self) -> Option<&LinkTemplate> {
        self.links.as_ref()
    }

    /// Identifies this compiled spec among other versions of the same Guard.
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    /// The Guard's delegate rules, in order (an [`ObjectDelegation`]'s rule numbers index this).
    pub fn delegate_rules(&self) -> impl ExactSizeIterator<Item = &DelegateRule> {
        self.delegate.iter().map(|c| &c.rule)
    }

    /// Delegate rule number `index` (from 0).
    pub fn delegate_rule(&self, index: usize) -> Option<&DelegateRule> {
        self.delegate.get(index).map(|c| &c.rule)
    }

    /// The delegated pointers that apply to one object; None when no rule selects it.
    pub fn delegation_for(
        &self,
        group: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<Arc<ObjectDelegation>> {
        let mut pointers = Vec::new();
        let mut rules = Vec::new();
        for (index, c) in self.delegate.iter().enumerate() {
            if c.what.selects(group, kind, namespace, name) {
                for pointer in &c.what.pointers {
                    pointers.push(pointer.clone());
                    rules.push(index);
                }
            }
        }
        (!pointers.is_empty()).then(|| {
            Arc::new(ObjectDelegation {
                pointers,
                rules,
                definitions: self.delegate_rules.clone(),
            })
        })
    }

    /// The ignore pointers that apply to one object.
    pub fn ignore_for(&self, group: &str, kind: &str, namespace: Option<&str>, name: &str) -> Arc<[IgnorePath]> {
        self.ignore
            .iter()
            .filter(|c| c.selects(group, kind, namespace, name))
            .flat_map(|c| c.pointers.iter().cloned())
            .collect()
    }
}

/// A delegate rule with its selectors and pointers compiled like an ignore rule's.
#[derive(Debug, Clone)]
struct CompiledDelegate {
    rule: DelegateRule,
    what: CompiledIgnore,
}

fn compile_delegate(guard: &GuardId, index: usize, rule: &DelegateRule) -> Result<CompiledDelegate, DesiredError> {
    let invalid = |reason: &str| DesiredError::InvalidDelegate {
        guard: guard.to_string(),
        rule: index + 1,
        reason: reason.to_owned(),
    };
    if rule.to.is_empty() {
        return Err(invalid(
            "`to` must name at least one of users, groups, serviceAccounts, fieldManagers",
        ));
    }
    if rule.json_pointers.is_empty() {
        return Err(invalid("`jsonPointers` must name at least one field"));
    }
    if let Some(Bounds { min, max, from_hpa }) = &rule.bounds {
        if *from_hpa && (min.is_some() || max.is_some()) {
            return Err(invalid("bounds: fromHPA excludes min and max"));
        }
        if let (Some(min), Some(max)) = (min, max)
            && min > max
        {
            return Err(invalid(&format!("bounds: min {min} exceeds max {max}")));
        }
    }
    let what = CompiledIgnore::compile(guard, rule.selector()).map_err(|e| invalid(&e.to_string()))?;
    Ok(CompiledDelegate {
        rule: rule.clone(),
        what,
    })
}

/// The delegated pointers of one object: `pointers[i]` is delegated by rule `rules[i]` of its
/// Guard ([`GuardPolicy::delegate_rule`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectDelegation {
    /// Pointers, in rule order.
    pub pointers: Vec<IgnorePath>,
    /// The rule of each pointer.
    pub rules: Vec<usize>,
    /// All the Guard's delegate rules (what `rules` index).
    pub definitions: Arc<[DelegateRule]>,
}

impl ObjectDelegation {
    /// Delegate rule number `index` (from 0) of the Guard.
    pub fn rule(&self, index: usize) -> Option<&DelegateRule> {
        self.definitions.get(index)
    }
}
