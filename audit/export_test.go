package audit

import (
	"testing"

	"github.com/portcullis-gw/portcullis/audit/verify"
)

// The helpers of writer_test.go, for the tests outside the package
// (index_test.go reads the trail back with audit/query, which imports
// audit, so it cannot live in package audit).

// TestTrail is a data dir and its trail directory, as testTrail.
type TestTrail struct{ Data, Dir string }

// NewTestTrail returns a trail in a fresh temporary data dir.
func NewTestTrail(t testing.TB) TestTrail {
	tt := newTrail(t)
	return TestTrail{Data: tt.data, Dir: tt.dir}
}

func (tt TestTrail) inner() testTrail { return testTrail{data: tt.Data, dir: tt.Dir} }

// Opts are the writer options of the trail.
func (tt TestTrail) Opts() Options { return tt.inner().opts() }

// Verify checks the trail's chain and checkpoints.
func (tt TestTrail) Verify(t testing.TB) *verify.Report { return tt.inner().verify(t) }

// MustIntact fails t unless r found the trail intact.
var MustIntact = mustIntact

// CheckFor polls f until it returns nil or timeout passes.
var CheckFor = checkFor
