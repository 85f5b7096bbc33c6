//! Shared test helpers: a valid manifest exercising every section.

#![allow(dead_code, unreachable_pub)]

pub const VALID: &str = r#"apiVersion: stellaops.io/pack.v1
kind: TaskPack
metadata:
  name: scan-deploy
  version: 1.0.0
  description: scan then deploy
  tags: [security]
  maintainers: [{name: Ops, email: ops@example.com}]
  license: MIT
  tenantVisibility: private
spec:
  inputs:
    - name: target
      type: string
      required: true
    - name: replicas
      type: integer
      default: 2
      schema: {minimum: 1, maximum: 10}
    - name: regions
      type: array
      default: [eu, us]
  secrets:
    - name: token
  approvals:
    - id: security-review
      grants: [packs.approve]
      requiredApprovals: 2
      expiresAfter: 24h
      reasonTemplate: "approve deploy of {{ inputs.target }}"
  policies:
    - id: no-critical
      rule: "steps.scan.outputs.critical == `0`"
      message: "{{ steps.scan.outputs.critical }} critical findings"
  failure:
    retries: {maxAttempts: 3, backoffSeconds: 5}
    continueOnError: false
  sandbox:
    mode: networked
    egressAllowlist: [registry.example.com, "api.example.com:443"]
    cpuLimitMillicores: 500
    memoryLimitMiB: 256
    quotaSeconds: 600
  slo: {runP95Seconds: 60, approvalP95Seconds: 3600, maxQueueDepth: 10}
  outputs:
    - name: report
      type: file
      path: "reports/{{ inputs.target }}.json"
    - name: summary
      type: object
      expression: steps.scan.outputs
  steps:
    - id: scan
      run:
        uses: builtin:scan
        with:
          target: "{{ inputs.target }}"
          token: "{{ secrets.token }}"
          nested: {list: ["{{ inputs.replicas }}", 1, true, null]}
    - id: checks
      parallel:
        maxParallel: 2
        steps:
          - id: lint
            run: {uses: builtin:lint, with: {findings: "{{ steps.scan.outputs }}"}}
          - id: test
            timeoutSeconds: 30
            retries: {maxAttempts: 2}
            run: {uses: acme/test-runner}
    - id: policy
      gate:
        policy:
          policy: no-critical
          failureAction: requestOverride
          overrideApproval: security-review
    - id: approve
      when: "inputs.replicas > `1`"
      gate:
        approval: {id: security-review, message: "deploy {{ inputs.target }}?"}
    - id: per-region
      map:
        items: inputs.regions
        maxParallel: 2
        step:
          id: deploy-region
          run: {uses: builtin:deploy, with: {region: "{{ item }}", n: "{{ index }}"}}
    - id: poll
      loop:
        items: {range: {start: 0, end: 5}}
        iterator: attempt
        index: i
        maxIterations: 10
        until: "steps.check.outputs.ready"
        aggregation: last
        steps:
          - id: check
            run: {uses: builtin:http.get, with: {attempt: "{{ attempt }}"}}
          - id: after-check
            run: {uses: builtin:echo, with: {ready: "{{ steps.check.outputs.ready }}"}}
    - id: pick
      conditional:
        outputUnion: true
        branches:
          - when: "steps.poll.outputs != `null`"
            steps:
              - id: notify
                run: {uses: builtin:notify, with: {poll: "{{ steps.poll.outputs }}"}}
        else:
          - id: fallback
            run: {uses: builtin:echo}
    - id: finish
      when: true
      run: {uses: builtin:echo, with: {msg: "{{ steps.notify.status }} {{ steps.\"per-region\".outputs }}"}}
"#;
