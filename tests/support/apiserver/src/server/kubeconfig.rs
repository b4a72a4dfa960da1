//! The kubeconfig a test hands to kubectl or kube::Client: the server's URL, its CA inline, a
//! bearer token, and a context whose namespace is `default`.
use base64::Engine as _;

/// A kubeconfig document (YAML) for `server` trusting `ca_pem`, authenticating with `token`.
pub(super) fn render(server: &str, ca_pem: &str, user: &str, token: &str) -> String {
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: testapi
  cluster:
    server: {server}
    certificate-authority-data: {ca}
users:
- name: {user}
  user:
    token: {token}
contexts:
- name: testapi
  context:
    cluster: testapi
    user: {user}
    namespace: default
current-context: testapi
preferences: {{}}
"
    )
}
