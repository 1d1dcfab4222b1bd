{{/* Every object of the chart is named after the release: `helm install adbm` makes adbm-operator. */}}
{{- define "adbm-operator.fullname" -}}
{{- if hasSuffix "operator" .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-operator" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "adbm-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "adbm-operator.labels" -}}
{{ include "adbm-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "adbm-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "adbm-operator.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The RBAC rules of files/rbac.yaml for one scope ("namespaced" or "cluster") in the current
mode, without the table's own keys. */}}
{{- define "adbm-operator.rules" -}}
{{- $root := index . 0 -}}
{{- $scope := index . 1 -}}
{{- $mode := ternary "allNamespaces" "someNamespaces" (empty $root.Values.watchNamespaces) -}}
{{- $table := $root.Files.Get "files/rbac.yaml" | fromYaml -}}
{{- $rules := list -}}
{{- range (index $table $scope) -}}
{{- if and (or (not .when) (eq .when $mode)) (or (not .peering) $root.Values.peering.enabled) -}}
{{- $rules = append $rules (omit . "when" "peering") -}}
{{- end -}}
{{- end -}}
{{- toYaml $rules -}}
{{- end -}}
