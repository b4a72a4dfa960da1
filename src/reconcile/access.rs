//! Admission and the enforcer follow a Guard's rights (README "Multi-tenancy"): when a desired
//! set is loaded, a SubjectAccessReview asks whether the Guard's identity may write each of its
//! objects (server-side apply is authorized as `patch`). What it may not write is neither
//! applied nor protected: admission never denies that object to its real owners, and the
//! Guard reports it. The review runs when a set is loaded, never per request, so the
//! admission hot path stays free of I/O. A set found wholly writable is trusted for a few
//! minutes per (Guard, revision, spec, identity); a refusal is asked again at the next load.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec};
use kube::api::{Api, PostParams};

use super::ObjectKey;
use super::tenancy::Identity;
use crate::desired::{DesiredObject, DesiredSet, GuardId};

/// The verb reviewed: server-side apply is authorized as patch.
pub const VERB: &str = "patch";

/// How long an answer is reused before the API is asked again.
const ANSWERS_LIVE: Duration = Duration::from_secs(300);

/// One access question: may the identity patch `resource` of `group` in `namespace`, the one
/// named `name` (None: every name).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Question {
    /// API group (`""` for core).
    pub group: String,
    /// Resource (plural).
    pub resource: String,
    /// Namespace (None: cluster-scoped).
    pub namespace: Option<String>,
    /// Object name (None: all of them).
    pub name: Option<String>,
}

impl Question {
    /// The question for every object of `object`'s resource in its namespace.
    pub fn broad(object: &DesiredObject) -> Self {
        Question {
            group: object.group.clone(),
            resource: object.resource.clone(),
            namespace: object.namespace.clone(),
            name: None,
        }
    }

    /// The question for exactly `object` (RBAC may grant single names).
    pub fn narrow(object: &DesiredObject) -> Self {
        Question {
            name: Some(object.name.clone()),
            ..Question::broad(object)
        }
    }
}

impl std::fmt::Display for Question {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let resource = if self.group.is_empty() {
            self.resource.clone()
        } else {
            format!("{}.{}", self.resource, self.group)
        };
        write!(f, "{VERB} {resource}")?;
        if let Some(name) = &self.name {
            write!(f, " {name}")?;
        }
        match &self.namespace {
            Some(namespace) => write!(f, " in namespace {namespace}"),
            None => f.write_str(" (cluster-wide)"),
        }
    }
}

/// The broad questions a set raises, each once, in a stable order: one per resource and
/// namespace, however many objects share them.
pub fn broad_questions(objects: &[DesiredObject]) -> Vec<Question> {
    objects
        .iter()
        .map(Question::broad)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// An object the Guard's identity may not write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotPermitted {
    /// Which object.
    pub key: ObjectKey,
    /// Its API version (for Events).
    pub version: String,
    /// What was asked and why the answer was no.
    pub reason: String,
}

impl std::fmt::Display for NotPermitted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.key, self.reason)
    }
}

/// A set cut down to what its Guard's identity may write.
#[derive(Debug)]
pub struct Permitted {
    /// The objects to apply and protect (the loaded set itself when everything is permitted).
    pub set: Arc<DesiredSet>,
    /// The objects left out, in render order.
    pub denied: Vec<NotPermitted>,
}

/// Why the access of a Guard's identity could not be reviewed.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot ask the API whether {identity} may {question}: {source} (driftguard needs create on subjectaccessreviews.authorization.k8s.io: chart RBAC rule 15)"
)]
pub struct AccessReviewError {
    identity: String,
    question: Question,
    #[source]
    source: kube::Error,
}

type Key = (GuardId, String, u64, Identity);

/// Asks the API server what Guards' identities may write, caching the answers.
#[derive(Clone)]
pub struct AccessReviewer {
    client: kube::Client,
    answers: moka::sync::Cache<Key, Arc<Permitted>>,
}

impl AccessReviewer {
    /// Review through `client` (driftguard's own identity).
    pub fn new(client: kube::Client) -> Self {
        AccessReviewer {
            client,
            answers: moka::sync::Cache::builder()
                .max_capacity(4096)
                .time_to_live(ANSWERS_LIVE)
                .build(),
        }
    }

    /// The part of `set` that `identity` may write. driftguard's own identity may write
    /// everything (the chart's RBAC is its bound) and is not reviewed.
    pub async fn review(
        &self,
        set: &Arc<DesiredSet>,
        identity: &Identity,
    ) -> Result<Arc<Permitted>, AccessReviewError> {
        let Some(user) = identity.username() else {
            return Ok(Arc::new(Permitted {
                set: set.clone(),
                denied: Vec::new(),
            }));
        };
        let key = (
            set.guard.id.clone(),
            set.revision.commit.clone(),
            set.guard.fingerprint(),
            identity.clone(),
        );
        if let Some(known) = self.answers.get(&key) {
            return Ok(known);
        }
        let groups = identity.groups();
        let mut answers: HashMap<Question, Option<String>> = HashMap::new();
        for question in broad_questions(&set.objects) {
            let answer = self.ask(&user, &groups, &question).await?;
            answers.insert(question, answer);
        }
        let mut denied = Vec::new();
        let mut refused = std::collections::HashSet::new();
        for (position, object) in set.objects.iter().enumerate() {
            if answers.get(&Question::broad(object)).is_some_and(Option::is_none) {
                continue; // the whole resource in that namespace is writable
            }
            let narrow = Question::narrow(object);
            if let Some(why) = self.ask(&user, &groups, &narrow).await? {
                denied.push(NotPermitted {
                    key: ObjectKey::of(object),
                    version: object.version.clone(),
                    reason: format!("{user} may not {narrow}{why}"),
                });
                refused.insert(position);
            }
        }
        for refusal in &denied {
            tracing::warn!(guard = %set.guard.id, object = %refusal.key, reason = %refusal.reason, "not applied and not protected: the Guard's identity may not write it");
        }
        let permitted = if denied.is_empty() {
            set.clone()
        } else {
            let mut position = 0;
            Arc::new(set.retain(|_| {
                let keep = !refused.contains(&position);
                position += 1;
                keep
            }))
        };
        let everything = denied.is_empty();
        let permitted = Arc::new(Permitted { set: permitted, denied });
        // A refusal is asked again at the next load, so a RoleBinding granting the right counts
        // at the next reconcile; what was allowed is trusted for ANSWERS_LIVE.
        if everything {
            self.answers.insert(key, permitted.clone());
        }
        Ok(permitted)
    }

    /// None when allowed; else why not (the authorizer's reason, if it gave one).
    async fn ask(
        &self,
        user: &str,
        groups: &[String],
        question: &Question,
    ) -> Result<Option<String>, AccessReviewError> {
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(user.to_owned()),
                groups: Some(groups.to_vec()),
                resource_attributes: Some(ResourceAttributes {
                    group: Some(question.group.clone()),
                    resource: Some(question.resource.clone()),
                    namespace: question.namespace.clone(),
                    name: question.name.clone(),
                    verb: Some(VERB.to_owned()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let answer = Api::<SubjectAccessReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(|source| AccessReviewError {
                identity: user.to_owned(),
                question: question.clone(),
                source,
            })?;
        let status = answer.status.unwrap_or_default();
        if status.allowed {
            return Ok(None);
        }
        Ok(Some(match status.reason.filter(|r| !r.is_empty()) {
            Some(reason) => format!(" ({reason})"),
            None => String::new(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::GuardSpec;
    use crate::desired::GuardPolicy;
    use crate::render::{Manifest, Origin};
    use crate::source::Revision;
    use serde_json::json;

    fn set(objects: Vec<serde_json::Value>) -> DesiredSet {
        let spec: GuardSpec = serde_json::from_value(json!({"sourceRef": {"name": "repo"}, "path": "."})).unwrap();
        let id = GuardId {
            namespace: "team-a".into(),
            name: "tenant".into(),
        };
        let policy = Arc::new(GuardPolicy::new(id, &spec, "file:///repo").unwrap());
        let revision = Revision {
            reference: "main@sha1:1".into(),
            commit: "1".into(),
        };
        let manifests = objects
            .into_iter()
            .enumerate()
            .map(|(i, object)| Manifest {
                object,
                origin: Origin {
                    file: format!("f{i}.yaml"),
                    line: 1,
                    document: None,
                },
                fields: Default::default(),
            })
            .collect();
        DesiredSet::build(policy, revision, manifests).unwrap()
    }

    fn cm(namespace: &str, name: &str) -> serde_json::Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": namespace}})
    }

    #[test]
    fn one_broad_question_per_resource_and_namespace() {
        let set = set(vec![
            cm("team-a", "one"),
            cm("team-a", "two"),
            cm("team-b", "shared"),
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                   "metadata": {"name": "root"}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"}}),
        ]);
        let questions: Vec<String> = broad_questions(&set.objects).iter().map(ToString::to_string).collect();
        assert_eq!(
            questions,
            [
                "patch configmaps in namespace team-a",
                "patch configmaps in namespace team-b",
                "patch clusterrolebindings.rbac.authorization.k8s.io (cluster-wide)",
            ]
        );
        assert_eq!(
            Question::narrow(&set.objects[2]).to_string(),
            "patch configmaps shared in namespace team-b"
        );
    }

    #[test]
    fn retain_keeps_order_and_drops_the_refused() {
        let set = set(vec![cm("team-a", "one"), cm("team-b", "two"), cm("team-a", "three")]);
        let kept = set.retain(|o| o.namespace.as_deref() == Some("team-a"));
        let names: Vec<&str> = kept.objects.iter().map(|o| o.name.as_str()).collect();
        assert_eq!(names, ["one", "three"]);
        assert!(kept.weight() < set.weight());
        assert_eq!(kept.revision, set.revision);
    }
}
