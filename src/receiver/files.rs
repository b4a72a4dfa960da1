//! Standalone targets: secrets from files, triggers as a wake-up for the refresher.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use super::{HookTargets, TargetError, TargetFuture, shared_secret};

/// One source of the config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSource {
    /// Source id, `namespace/name`.
    pub id: String,
    /// The file holding its shared secret; `None`: no receiver (404).
    pub secret_file: Option<PathBuf>,
}

/// [`HookTargets`] for standalone mode. The secret file is read on every verified lookup, so
/// replacing it takes effect at once. A trigger records the source and wakes whoever waits on
/// [`FileTargets::notify`]: `notify_one` keeps one wake-up when nobody waits yet, so a push
/// that arrives during a refresh is not lost.
#[derive(Debug)]
pub struct FileTargets {
    sources: HashMap<String, Option<PathBuf>>,
    notify: Arc<Notify>,
    requested: Mutex<BTreeSet<String>>,
}

impl FileTargets {
    /// Targets for `sources`.
    pub fn new(sources: impl IntoIterator<Item = FileSource>) -> Self {
        FileTargets {
            sources: sources.into_iter().map(|s| (s.id, s.secret_file)).collect(),
            notify: Arc::new(Notify::new()),
            requested: Mutex::new(BTreeSet::new()),
        }
    }

    /// Notified once per verified push (wake-ups coalesce while nobody waits): the refresher
    /// selects on `notify().notified()` next to its ticker.
    pub fn notify(&self) -> Arc<Notify> {
        self.notify.clone()
    }

    /// Ids (`namespace/name`) of the sources pushed to since the last call, sorted.
    pub fn take_requested(&self) -> Vec<String> {
        let mut requested = self.requested.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::take(&mut *requested).into_iter().collect()
    }
}

impl HookTargets for FileTargets {
    fn secret<'a>(&'a self, namespace: &'a str, name: &'a str) -> TargetFuture<'a, Option<Vec<u8>>> {
        Box::pin(async move {
            let Some(Some(file)) = self.sources.get(&format!("{namespace}/{name}")) else {
                return Ok(None);
            };
            let stored = tokio::fs::read(file).await.map_err(|e| {
                TargetError::Misconfigured(format!("cannot read the receiver secret {}: {e}", file.display()))
            })?;
            let secret = shared_secret(stored);
            if secret.is_empty() {
                return Err(TargetError::Misconfigured(format!(
                    "the receiver secret {} is empty",
                    file.display()
                )));
            }
            Ok(Some(secret))
        })
    }

    fn trigger<'a>(&'a self, namespace: &'a str, name: &'a str) -> TargetFuture<'a, ()> {
        Box::pin(async move {
            self.requested
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(format!("{namespace}/{name}"));
            self.notify.notify_one();
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn secrets_come_from_files_and_triggers_wake_the_refresher() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "s3cret\n").unwrap();
        let targets = FileTargets::new([
            FileSource {
                id: "default/apps".into(),
                secret_file: Some(file.clone()),
            },
            FileSource {
                id: "default/plain".into(),
                secret_file: None,
            },
            FileSource {
                id: "default/broken".into(),
                secret_file: Some(dir.path().join("missing")),
            },
        ]);
        assert_eq!(targets.secret("default", "apps").await, Ok(Some(b"s3cret".to_vec())));
        assert_eq!(targets.secret("default", "plain").await, Ok(None));
        assert_eq!(targets.secret("other", "apps").await, Ok(None));
        assert!(matches!(
            targets.secret("default", "broken").await,
            Err(TargetError::Misconfigured(_))
        ));
        std::fs::write(&file, "\n").unwrap();
        assert!(matches!(
            targets.secret("default", "apps").await,
            Err(TargetError::Misconfigured(_))
        ));

        let notify = targets.notify();
        targets.trigger("default", "apps").await.unwrap();
        targets.trigger("default", "apps").await.unwrap();
        // The wake-up was kept for a refresher that was busy when the push came.
        tokio::time::timeout(std::time::Duration::from_secs(5), notify.notified())
            .await
            .unwrap();
        assert_eq!(targets.take_requested(), ["default/apps"]);
        assert!(targets.take_requested().is_empty());
    }
}
