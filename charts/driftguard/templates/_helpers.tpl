{{/* The chart name, or nameOverride. */}}
{{- define "driftguard.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name of the release's objects: fullnameOverride, else the release name when it
contains the chart name, else <release>-<name>. 52 characters at most, so that every name
derived from it (<fullname>-pre-delete, <fullname>-selfsigned) stays a valid label value.
*/}}
{{- define "driftguard.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* helm.sh/chart label value. */}}
{{- define "driftguard.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "driftguard.labels" -}}
helm.sh/chart: {{ include "driftguard.chart" . }}
{{ include "driftguard.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: driftguard
{{- end }}

{{/* Labels that select the webhook pods. */}}
{{- define "driftguard.selectorLabels" -}}
app.kubernetes.io/name: {{ include "driftguard.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The service account the webhook pods run as. */}}
{{- define "driftguard.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "driftguard.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The service account the pre-delete hook Job runs as. */}}
{{- define "driftguard.hookServiceAccountName" -}}
{{- if .Values.rbac.create }}
{{- printf "%s-pre-delete" (include "driftguard.fullname" .) }}
{{- else }}
{{- include "driftguard.serviceAccountName" . }}
{{- end }}
{{- end }}

{{/* The image reference: repository[:tag][@digest]; the tag defaults to appVersion. */}}
{{- define "driftguard.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s:%s@%s" .Values.image.repository $tag .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/* The username the API server gives driftguard's service account. */}}
{{- define "driftguard.username" -}}
{{- printf "system:serviceaccount:%s:%s" .Release.Namespace (include "driftguard.serviceAccountName" .) }}
{{- end }}

{{/* The name of the Secret holding the serving certificate (cert-manager and files modes). */}}
{{- define "driftguard.tlsSecretName" -}}
{{- if eq .Values.certs.mode "files" }}
{{- .Values.certs.files.secretName }}
{{- else }}
{{- printf "%s-tls" (include "driftguard.fullname" .) }}
{{- end }}
{{- end }}

{{/* The four DNS names of the webhook Service. */}}
{{- define "driftguard.serviceDNSNames" -}}
{{- $svc := include "driftguard.fullname" . -}}
- {{ $svc }}
- {{ $svc }}.{{ .Release.Namespace }}
- {{ $svc }}.{{ .Release.Namespace }}.svc
- {{ $svc }}.{{ .Release.Namespace }}.svc.cluster.local
{{- end }}
