{{- /*
The alert rules, one Prometheus rule file: shipped as the ConfigMap <release>-abacus-alerts
(for any Prometheus: load its abacus.rules.yml) and, with alerts.prometheusRule.enabled, as a
Prometheus Operator PrometheusRule. test/alerts/abacus.rules.test.yml unit-tests them
(`promtool test rules`).
*/ -}}
{{- define "abacus.alertRules" -}}
groups:
  - name: abacus
    rules:
      - alert: AbacusWorkersNotReady
        expr: max by (job_namespace, abacusjob) (abacus_operator_job_workers{state="desired"}) > max by (job_namespace, abacusjob) (abacus_operator_job_workers{state="ready"})
        for: {{ .Values.alerts.workersNotReadyFor }}
        labels:
          severity: warning
        annotations:
          summary: {{ `"AbacusJob {{ $labels.job_namespace }}/{{ $labels.abacusjob }}: fewer workers ready than desired"` }}
          description: {{ `"A worker that is not ready counts nothing for its key groups: their input waits in Kafka. Check kubectl describe abacusjob {{ $labels.abacusjob }} -n {{ $labels.job_namespace }} and the worker pods' events and logs."` }}
      - alert: AbacusInputLagHigh
        expr: max by (namespace, pod) (abacus_input_lag_seconds) > {{ .Values.alerts.inputLagSeconds }}
        for: {{ .Values.alerts.inputLagFor }}
        labels:
          severity: warning
        annotations:
          summary: {{ `"Worker {{ $labels.namespace }}/{{ $labels.pod }} is {{ $value | humanizeDuration }} behind its input"` }}
          description: "Counts are late: the worker commits records ingested this long ago. It may be overloaded (scale the job) or its sink slow."
      - alert: AbacusSinkFailing
        expr: sum by (namespace, pod) (rate(abacus_sink_write_retries_total[5m])) > 0
        for: {{ .Values.alerts.sinkFailingFor }}
        labels:
          severity: warning
        annotations:
          summary: {{ `"Worker {{ $labels.namespace }}/{{ $labels.pod }} keeps retrying Cassandra"` }}
          description: "Writes or hydration reads to Cassandra fail and are retried; the worker has paused its input meanwhile (nothing is lost, counts wait)."
      - alert: AbacusNativeStateOverBudget
        expr: max by (namespace, pod) (abacus_native_state_bytes - abacus_native_state_limit_bytes) > 0
        for: {{ .Values.alerts.nativeStateOverBudgetFor }}
        labels:
          severity: warning
        annotations:
          summary: {{ `"Worker {{ $labels.namespace }}/{{ $labels.pod }}: the native engine's state is {{ $value | humanize1024 }}B over its share of the memory budget"` }}
          description: "The native engine spills dedup identities and uniqueness markers under memoryBudget, but its counters and customers stay in memory, and they alone pass the budget's share: the pod may exceed its memory. Raise spec.memoryBudget (and resources.limits.memory) by up to 2.6 times the excess (the kernel gets 39 % of a budget of 800 MiB or more), or scale the job out so each worker holds fewer key groups."
      - alert: AbacusOperatorNoLeader
        expr: sum(abacus_operator_leader) < 1
        for: {{ .Values.alerts.operatorNoLeaderFor }}
        labels:
          severity: critical
        annotations:
          summary: "No Abacus operator replica holds the leader Lease"
          description: "AbacusJobs are not reconciled: scaling, spec changes and status wait. Check the operator pods."
      - alert: AbacusReconcileErrors
        expr: sum(rate(abacus_operator_reconcile_errors_total[10m])) > 0
        for: {{ .Values.alerts.reconcileErrorsFor }}
        labels:
          severity: warning
        annotations:
          summary: "The Abacus operator keeps failing to reconcile"
          description: "See the operator's logs and the AbacusJobs' conditions (kubectl describe abacusjob)."
{{- end -}}
