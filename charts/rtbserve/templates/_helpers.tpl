{{/* Names are capped at 63 characters: the limit of a DNS label and of a label value. */}}
{{- define "rtbserve.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "rtbserve.fullname" -}}
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

{{/* A name for one component, e.g. "<fullname>-operator". */}}
{{- define "rtbserve.componentName" -}}
{{- $fullname := include "rtbserve.fullname" .root }}
{{- printf "%s-%s" ($fullname | trunc (int (sub 62 (len .component)))) .component | trimSuffix "-" }}
{{- end }}

{{- define "rtbserve.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "rtbserve.labels" -}}
helm.sh/chart: {{ include "rtbserve.chart" . }}
{{ include "rtbserve.selectorLabels" . }}
app.kubernetes.io/version: {{ include "rtbserve.imageTag" . | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: rtbserve
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "rtbserve.selectorLabels" -}}
app.kubernetes.io/name: {{ include "rtbserve.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels for one component: call with (dict "root" $ "component" "operator"). */}}
{{- define "rtbserve.componentLabels" -}}
{{ include "rtbserve.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "rtbserve.componentSelectorLabels" -}}
{{ include "rtbserve.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "rtbserve.imageTag" -}}
{{- default .Chart.AppVersion .Values.image.tag }}
{{- end }}

{{/* One image runs the operator, the model servers and the load generator. */}}
{{- define "rtbserve.image" -}}
{{- printf "%s:%s" .Values.image.repository (include "rtbserve.imageTag" .) }}
{{- end }}

{{- define "rtbserve.operator.serviceAccountName" -}}
{{- if .Values.operator.serviceAccount.create }}
{{- default (include "rtbserve.componentName" (dict "root" . "component" "operator")) .Values.operator.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.operator.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "rtbserve.modelServer.serviceAccountName" -}}
{{- if .Values.modelServer.serviceAccount.create }}
{{- default (include "rtbserve.componentName" (dict "root" . "component" "model-server")) .Values.modelServer.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.modelServer.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "rtbserve.loadgen.serviceAccountName" -}}
{{- if .Values.loadgen.serviceAccount.create }}
{{- default (include "rtbserve.componentName" (dict "root" . "component" "loadgen")) .Values.loadgen.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.loadgen.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The namespaces the operator watches (watch-namespace mode); the release namespace by default. */}}
{{- define "rtbserve.watchNamespaces" -}}
{{- $namespaces := .Values.operator.watchNamespaces | default (list .Release.Namespace) }}
{{- toJson (uniq $namespaces) }}
{{- end }}

{{/* ServiceAccount annotations: the IRSA role (when set) plus any others. */}}
{{- define "rtbserve.serviceAccountAnnotations" -}}
{{- $annotations := deepCopy (.annotations | default dict) }}
{{- if .roleArn }}
{{- $_ := set $annotations "eks.amazonaws.com/role-arn" .roleArn }}
{{- end }}
{{- with $annotations }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* Writable scratch space for a read-only root filesystem: /tmp is HOME and TMPDIR (see the
     Dockerfile); the operator also gets /var/cache/rtbserve for the artifacts it verifies,
     sized apart from /tmp. Call with the component's values. */}}
{{- define "rtbserve.scratchVolumes" -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ .tmpSizeLimit }}
{{- if .cacheSizeLimit }}
- name: cache
  emptyDir:
    sizeLimit: {{ .cacheSizeLimit }}
{{- end }}
{{- end }}

{{- define "rtbserve.scratchVolumeMounts" -}}
- name: tmp
  mountPath: /tmp
{{- if .cacheSizeLimit }}
- name: cache
  mountPath: /var/cache/rtbserve
{{- end }}
{{- end }}

{{/* `rtbserve loadgen` arguments, one per line. */}}
{{- define "rtbserve.loadgen.args" -}}
{{- $v := .Values.loadgen -}}
- loadgen
- --target={{ $v.target }}
- --rate={{ $v.rate }}
- --duration={{ $v.duration }}
- --connections={{ $v.connections }}
- --workers={{ $v.workers }}
- --max-error-ratio={{ $v.maxErrorRatio }}
{{- if gt (int $v.pods) 1 }}
- --shards={{ $v.pods }}
- --shard-store={{ trimSuffix "/" $v.shardStore }}/$(RTBSERVE_LOADGEN_JOB)/
- --merge
- --merge-wait={{ $v.mergeWait }}
{{- end }}
{{- with $v.sloP99 }}
- --slo-p99={{ . }}
{{- end }}
{{- with $v.replay }}
- --replay={{ . }}
{{- end }}
{{- with $v.reportS3 }}
- --report-s3={{ . }}
{{- end }}
{{- with $v.inferenceModel }}
- --inference-model={{ . }}
- --namespace={{ $v.inferenceModelNamespace | default $.Release.Namespace }}
{{- end }}
- --plain
{{- range $v.extraArgs }}
- {{ . | quote }}
{{- end }}
{{- end }}

{{/* The Job's name: "<fullname>-loadgen-<hash of image and arguments>". */}}
{{- define "rtbserve.loadgen.jobName" -}}
{{- $hash := printf "%s %s" (include "rtbserve.image" .) (include "rtbserve.loadgen.args" .) | sha256sum | trunc 8 }}
{{- printf "%s-%s" (include "rtbserve.componentName" (dict "root" . "component" "loadgen") | trunc 54 | trimSuffix "-") $hash }}
{{- end }}
