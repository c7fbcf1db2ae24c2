package testutil

import (
	"os"
	"path/filepath"
	"testing"
)

// fakeT records failures instead of stopping the test.
type fakeT struct {
	testing.TB
	failed bool
}

func (f *fakeT) Helper()               {}
func (f *fakeT) Errorf(string, ...any) { f.failed = true }
func (f *fakeT) Fatalf(string, ...any) { f.failed = true }

func TestGolden(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "out.golden")
	Golden(t, path, []byte("v1\n"), true)
	if b, _ := os.ReadFile(path); string(b) != "v1\n" {
		t.Fatalf("update wrote %q", b)
	}
	Golden(t, path, []byte("v1\n"), false)
	ft := &fakeT{TB: t}
	Golden(ft, path, []byte("v2\n"), false)
	if !ft.failed {
		t.Error("a different output passed")
	}
	ft = &fakeT{TB: t}
	Golden(ft, filepath.Join(t.TempDir(), "missing"), []byte("x"), false)
	if !ft.failed {
		t.Error("a missing golden file passed")
	}
}
