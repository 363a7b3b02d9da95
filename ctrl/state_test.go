package ctrl

import (
	"testing"

	"github.com/snapgate/snapgate/ctrl/model"
)

func TestFbsRouteStaleness(t *testing.T) {
	for _, tc := range []struct {
		in           model.Route
		bound        uint32
		reject, head bool
	}{
		{model.Route{ID: "a", Host: "*", Prefix: "/", Cluster: "c"}, 0, false, false},
		{model.Route{ID: "b", Host: "*", Prefix: "/", Cluster: "c", MaxStalenessMs: 3000}, 3000, false, false},
		{model.Route{ID: "c", Host: "*", Prefix: "/", Cluster: "c", MaxStalenessMs: 3000, OnStale: model.OnStaleServe, StaleHeader: true}, 3000, false, true},
		{model.Route{ID: "d", Host: "*", Prefix: "/", Cluster: "c", MaxStalenessMs: 2000, OnStale: model.OnStaleReject}, 2000, true, false},
	} {
		if err := tc.in.Validate(); err != nil {
			t.Fatalf("route %s: %v", tc.in.ID, err)
		}
		got := fbsRoute(&tc.in)
		if got.MaxStalenessMs != tc.bound || got.OnStaleReject != tc.reject || got.StaleHeader != tc.head {
			t.Errorf("route %s converted to bound %d reject %v header %v, want %d %v %v",
				tc.in.ID, got.MaxStalenessMs, got.OnStaleReject, got.StaleHeader, tc.bound, tc.reject, tc.head)
		}
	}
}
