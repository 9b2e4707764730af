{{/* Chart name, overridable. */}}
{{- define "appservicelink.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name; truncated to 63 characters because of DNS naming limits. */}}
{{- define "appservicelink.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "appservicelink.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "appservicelink.labels" -}}
helm.sh/chart: {{ include "appservicelink.chart" . }}
{{ include "appservicelink.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: appservicelink
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Labels that select the operator's pods; never change them after install (Deployment selectors are immutable). */}}
{{- define "appservicelink.selectorLabels" -}}
app.kubernetes.io/name: {{ include "appservicelink.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "appservicelink.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "appservicelink.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The image reference: a digest wins over the tag; the tag defaults to the chart's appVersion. */}}
{{- define "appservicelink.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Where an extra CA bundle for Azure is mounted. */}}
{{- define "appservicelink.caBundleDir" -}}/etc/appservicelink/azure-ca{{- end }}

{{/* Checks values that the schema cannot express; fails the install with what to fix. */}}
{{- define "appservicelink.validate" -}}
{{- $cred := .Values.azure.credential }}
{{- if eq $cred "client-secret" }}
{{- if not .Values.azure.clientSecret.existingSecret }}
{{- fail "azure.credential=client-secret needs azure.clientSecret.existingSecret: the name of a Secret you created (the chart never takes a secret value)" }}
{{- end }}
{{- if not .Values.azure.clientSecret.clientId }}
{{- fail "azure.credential=client-secret needs azure.clientSecret.clientId (the service principal's application id)" }}
{{- end }}
{{- if not .Values.azure.clientSecret.tenantId }}
{{- fail "azure.credential=client-secret needs azure.clientSecret.tenantId" }}
{{- end }}
{{- end }}
{{- if and .Values.serviceMonitor.enabled (not .Values.metricsService.enabled) }}
{{- fail "serviceMonitor.enabled needs metricsService.enabled: the ServiceMonitor scrapes that Service" }}
{{- end }}
{{- end }}
