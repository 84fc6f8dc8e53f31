package e2e

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestNoCitationOutsideRepository holds the rule that the repository
// explains itself: no source file, doc or script cites a document that is
// not in it (the team's working notes live elsewhere and are not shipped).
func TestNoCitationOutsideRepository(t *testing.T) {
	outside := regexp.MustCompile(`\b(SPEC|DESIGN) §|\b(SPEC|DESIGN|STYLE|WAMP)\.md\b|\.\./shared\b`)
	root := ".."
	var files int
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if d.IsDir() {
			if name == ".git" || name == "node_modules" || name == "testdata" {
				return filepath.SkipDir
			}
			return nil
		}
		switch filepath.Ext(name) {
		case ".go", ".md", ".yaml", ".yml", ".js", ".ts", ".py", ".php", ".sh", "":
		default:
			return nil
		}
		if name == "citations_test.go" {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		files++
		for i, line := range strings.Split(string(b), "\n") {
			if outside.MatchString(line) {
				t.Errorf("%s:%d cites a document outside the repository: %s", path, i+1, strings.TrimSpace(line))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files < 50 {
		t.Fatalf("read only %d files: is the test running from e2e/?", files)
	}
}
