package amd64

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestPagingLevels(t *testing.T) {
	for _, tc := range []struct {
		name string
		r    Registers
		want int
	}{
		{"paging off", Registers{}, 0},
		{"32-bit", Registers{CR0: CR0PG}, 2},
		{"PAE", Registers{CR0: CR0PG, CR4: CR4PAE}, 3},
		{"long 4-level", Registers{CR0: CR0PG, CR4: CR4PAE, EFER: EFERLMA}, 4},
		{"long 5-level", Registers{CR0: CR0PG, CR4: CR4PAE | CR4LA57, EFER: EFERLMA}, 5},
	} {
		t.Run(tc.name, func(t *testing.T) { require.Equal(t, tc.want, tc.r.PagingLevels()) })
	}
}

func TestGroupsHas(t *testing.T) {
	g := HaveGPR | HaveControl
	require.True(t, g.Has(HaveGPR))
	require.True(t, g.Has(HaveGPR|HaveControl))
	require.False(t, g.Has(HaveDebug))
}
