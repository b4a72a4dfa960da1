//! Keeps [`HpaBounds`] current from a watch of every HorizontalPodAutoscaler
//! (`autoscaling/v2`), for delegate rules with `bounds: {fromHPA: true}`.

use futures_util::StreamExt;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};

use crate::desired::{HpaBounds, HpaEntry};

fn entry(hpa: &HorizontalPodAutoscaler) -> Option<(String, HpaEntry)> {
    serde_json::to_value(hpa).ok().as_ref().and_then(HpaBounds::entry_of)
}

/// Follow the HPAs until `stop` resolves. A failed watch is retried with backoff; the table
/// keeps its last contents meanwhile.
pub(super) async fn follow(client: Client, bounds: HpaBounds, stop: impl std::future::Future<Output = ()>) {
    let api = Api::<HorizontalPodAutoscaler>::all(client);
    let mut stream = watcher(api, watcher::Config::default()).default_backoff().boxed();
    let mut listing: Vec<(String, HpaEntry)> = Vec::new();
    let run = async {
        while let Some(event) = stream.next().await {
            match event {
                Ok(watcher::Event::Init) => listing.clear(),
                Ok(watcher::Event::InitApply(hpa)) => listing.extend(entry(&hpa)),
                Ok(watcher::Event::InitDone) => bounds.replace_all(std::mem::take(&mut listing)),
                Ok(watcher::Event::Apply(hpa)) => match entry(&hpa) {
                    Some((namespace, entry)) => bounds.upsert(&namespace, entry),
                    None => {
                        if let (Some(ns), Some(name)) = (&hpa.metadata.namespace, &hpa.metadata.name) {
                            bounds.remove(ns, name);
                        }
                    }
                },
                Ok(watcher::Event::Delete(hpa)) => {
                    if let (Some(ns), Some(name)) = (&hpa.metadata.namespace, &hpa.metadata.name) {
                        bounds.remove(ns, name);
                    }
                }
                Err(error) => tracing::debug!(%error, "HorizontalPodAutoscaler watch"),
            }
        }
    };
    tokio::select! {
        () = run => {}
        () = stop => {}
    }
}
