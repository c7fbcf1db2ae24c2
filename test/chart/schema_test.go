package chart

import (
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// TestSchemaRejectsBadValues feeds bad values (as a user's -f file would) and checks that the schema
// refuses each one with a message naming the value and the reason.
func TestSchemaRejectsBadValues(t *testing.T) {
	c := loadChart(t)
	cases := []struct {
		name   string
		values string
		want   []string // substrings of the error, in order of appearance not required
	}{
		{"string for replicas", `replicaCount: "3"`, []string{"at '/replicaCount': got string, want integer"}},
		{"negative replicas", `replicaCount: -1`, []string{"at '/replicaCount': minimum: got -1, want 0"}},
		{"unknown top-level key (typo)", `replicas: 3`, []string{"additional properties 'replicas' not allowed"}},
		{"unknown nested key (typo)", "image:\n  tags: v2", []string{"at '/image': additional properties 'tags' not allowed"}},
		{"negative service port", "service:\n  port: -80", []string{"at '/service/port': minimum: got -80, want 1"}},
		{"port above 65535", "containerPorts:\n  http: 80800", []string{"at '/containerPorts/http': maximum: got 80,800, want 65,535"}},
		{"unknown service type", "service:\n  type: External", []string{"at '/service/type': value must be one of 'ClusterIP', 'NodePort', 'LoadBalancer'"}},
		{"GPU limit without toleration", "resources:\n  limits:\n    nvidia.com/gpu: 1", []string{"at '/tolerations': minItems: got 0, want 1"}},
		{"GPU on with no tolerations", "gpu:\n  enabled: true\n  tolerations: []", []string{"at '/gpu/tolerations': minItems: got 0, want 1"}},
		{"GPU count zero", "gpu:\n  enabled: true\n  count: 0", []string{"at '/gpu/count': minimum: got 0, want 1"}},
		{"workload identity without client ID", "workloadIdentity:\n  enabled: true", []string{"at '/workloadIdentity/clientId': minLength: got 0, want 36"}},
		{"client ID not a GUID", "workloadIdentity:\n  clientId: my-identity", []string{"at '/workloadIdentity/clientId': 'my-identity' does not match pattern"}},
		{"storage class outside Azure Files/Blob", "persistence:\n  storageClass: managed-csi", []string{"at '/persistence/storageClass': value must be one of 'azurefile-csi'"}},
		{"unknown PodMonitor group", "metrics:\n  podMonitor:\n    apiGroup: monitoring.azure.com", []string{"at '/metrics/podMonitor/apiGroup': value must be one of 'azmonitoring.coreos.com', 'monitoring.coreos.com'"}},
		{"bad model version label", "model:\n  version: v1 beta", []string{"at '/model/version'", "does not match pattern"}},
		{"CPU target over 100%", "autoscaling:\n  targetCPUUtilizationPercentage: 150", []string{"at '/autoscaling/targetCPUUtilizationPercentage': maximum: got 150, want 100"}},
		{"bad quantity", "resources:\n  requests:\n    memory: 2 GB", []string{"at '/resources/requests/memory'"}},
		{"model fetch without source", "modelFetch:\n  enabled: true", []string{"at '/modelFetch/sourceUrl': minLength: got 0, want 9"}},
		{"plain http model source", "modelFetch:\n  enabled: true\n  sourceUrl: http://example.com/m", []string{"at '/modelFetch/sourceUrl': 'http://example.com/m' does not match pattern"}},
		{"bad digest", "image:\n  digest: sha256:abc", []string{"at '/image/digest': 'sha256:abc' does not match pattern"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var vals map[string]any
			if err := yaml.Unmarshal([]byte(tc.values), &vals); err != nil {
				t.Fatalf("bad test values: %v", err)
			}
			_, err := renderValues(t, c, vals)
			if err == nil {
				t.Fatalf("values accepted:\n%s", tc.values)
			}
			t.Logf("%s", err)
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not say %q:\n%v", w, err)
				}
			}
		})
	}
}
