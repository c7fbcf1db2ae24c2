package rollout

import (
	"encoding/json"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/api/equality"
)

// annotationPatch returns a JSON Patch (RFC 6902) that turns base's annotations into next's,
// guarded by a test that the state annotation still reads what base had. It is how the engine
// writes its state: unlike an update, a patch carries no resourceVersion, so the Deployment
// controller's status writes in between (a new resourceVersion every time pods change) do not
// make it fail with a conflict, while the test still refuses it if anybody changed the state.
//
// ok is false when next differs from base outside the annotations (spec changes go through an
// update, so that a concurrent edit of the spec is never overwritten) or base has no state to
// test.
func annotationPatch(base, next *appsv1.Deployment) (patch []byte, ok bool) {
	state, had := base.Annotations[AnnotationState]
	if !had {
		return nil, false
	}
	same := base.DeepCopy()
	same.Annotations = next.Annotations
	if !equality.Semantic.DeepEqual(same, next) {
		return nil, false
	}
	type op struct {
		Op    string  `json:"op"`
		Path  string  `json:"path"`
		Value *string `json:"value,omitempty"`
	}
	path := func(k string) string {
		return "/metadata/annotations/" + strings.NewReplacer("~", "~0", "/", "~1").Replace(k)
	}
	ops := []op{{Op: "test", Path: path(AnnotationState), Value: &state}}
	for k, v := range next.Annotations {
		if old, has := base.Annotations[k]; !has || old != v {
			ops = append(ops, op{Op: "add", Path: path(k), Value: &v})
		}
	}
	for k := range base.Annotations {
		if _, has := next.Annotations[k]; !has {
			ops = append(ops, op{Op: "remove", Path: path(k)})
		}
	}
	b, err := json.Marshal(ops)
	return b, err == nil
}
