// A tiny library: a Deployment and a Service for one container.
{
  labels(name):: { 'app.kubernetes.io/name': name },

  deployment(name, namespace, image, replicas):: {
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata: { name: name, namespace: namespace, labels: $.labels(name) },
    spec: {
      replicas: replicas,
      selector: { matchLabels: $.labels(name) },
      template: {
        metadata: { labels: $.labels(name) },
        spec: { containers: [{ name: name, image: image, ports: [{ containerPort: 8080 }] }] },
      },
    },
  },

  service(name, namespace):: {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name: name, namespace: namespace, labels: $.labels(name) },
    spec: { selector: $.labels(name), ports: [{ port: 80, targetPort: 8080 }] },
  },
}
