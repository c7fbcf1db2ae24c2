{{/*
Chart name, truncated to 63 characters (a label value).
*/}}
{{- define "mlapp.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name of every object: release name, plus the chart name unless the release name already holds it.
Truncated to 52 characters so derived names (ReplicaSet hashes, "-canary" Deployments) stay valid.
*/}}
{{- define "mlapp.fullname" -}}
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

{{/*
Chart label value.
*/}}
{{- define "mlapp.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Image tag: the tag value, or the chart's appVersion.
*/}}
{{- define "mlapp.imageTag" -}}
{{- .Values.image.tag | default .Chart.AppVersion | toString }}
{{- end }}

{{/*
Common labels: the recommended app.kubernetes.io set. The version label is the image tag.
*/}}
{{- define "mlapp.labels" -}}
helm.sh/chart: {{ include "mlapp.chart" . }}
{{ include "mlapp.selectorLabels" . }}
app.kubernetes.io/version: {{ include "mlapp.imageTag" . | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/component: model-server
app.kubernetes.io/part-of: {{ include "mlapp.name" . }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
Model labels: what kubectl mlhealth groups by. Never part of a selector.
*/}}
{{- define "mlapp.modelLabels" -}}
mlapp.aks-mlops.io/model: {{ .Values.model.name | quote }}
mlapp.aks-mlops.io/model-version: {{ .Values.model.version | toString | quote }}
{{- end }}

{{/*
Selector labels: only labels a canary pod shares with the stable pods (the Service contract, see README).
*/}}
{{- define "mlapp.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mlapp.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
ServiceAccount name.
*/}}
{{- define "mlapp.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "mlapp.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Image repository with its registry; global.imageRegistry replaces the image's registry.
Call with (dict "image" .Values.image "global" .Values.global).
*/}}
{{- define "mlapp.imageRepository" -}}
{{- $registry := .image.registry }}
{{- if .global.imageRegistry }}{{ $registry = .global.imageRegistry }}{{ end }}
{{- if $registry }}
{{- printf "%s/%s" $registry .image.repository }}
{{- else }}
{{- .image.repository }}
{{- end }}
{{- end }}

{{/*
Image reference from {registry, repository, tag, digest}: pulled by digest when one is set.
Call with (dict "image" .Values.image "global" .Values.global "defaultTag" .Chart.AppVersion).
*/}}
{{- define "mlapp.image" -}}
{{- $repo := include "mlapp.imageRepository" . }}
{{- if .image.digest }}
{{- printf "%s@%s" $repo .image.digest }}
{{- else }}
{{- printf "%s:%s" $repo (.image.tag | default .defaultTag | toString) }}
{{- end }}
{{- end }}

{{/*
Name of the PVC holding the model.
*/}}
{{- define "mlapp.claimName" -}}
{{- .Values.persistence.existingClaim | default (printf "%s-model" (include "mlapp.fullname" .)) }}
{{- end }}
