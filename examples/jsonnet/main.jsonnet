// Rendered with: ext var `namespace` (string), top-level argument `replicas` (code), and the
// library directory `lib`. The same as:
//   jsonnet -J lib --ext-str namespace=shop --tla-code replicas=3 main.jsonnet
local app = import 'app.libsonnet';
local namespace = std.extVar('namespace');

function(replicas=1, image='registry.example/web:1.4.2') {
  namespace: {
    apiVersion: 'v1',
    kind: 'Namespace',
    metadata: { name: namespace },
  },
  web: [
    app.deployment('web', namespace, image, replicas),
    app.service('web', namespace),
  ],
  // Nothing is rendered for null: optional objects can be switched off.
  debug: null,
}
