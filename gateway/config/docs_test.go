package config

import (
	"os"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// TestEveryKeyDocumented holds docs/CONFIG.md to the default config: every
// key path of default.yaml is named there (as `a.b` or as its last part
// within its section).
func TestEveryKeyDocumented(t *testing.T) {
	doc, err := os.ReadFile("../../docs/CONFIG.md")
	if err != nil {
		t.Fatal(err)
	}
	var root yaml.Node
	if err := yaml.Unmarshal([]byte(defaultYAML), &root); err != nil {
		t.Fatal(err)
	}
	var walk func(prefix string, n *yaml.Node)
	walk = func(prefix string, n *yaml.Node) {
		if n.Kind == yaml.DocumentNode {
			walk(prefix, n.Content[0])
			return
		}
		if n.Kind != yaml.MappingNode {
			return
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			key := n.Content[i].Value
			path := key
			if prefix != "" {
				path = prefix + "." + key
			}
			// Sections are documented by their keys, rate/burst pairs
			// with their limit.
			v := n.Content[i+1]
			section := v.Kind == yaml.MappingNode && (len(v.Content) == 0 || v.Content[0].Value != "rate")
			if key != "rate" && key != "burst" && !section {
				short := path
				if j := strings.IndexByte(path, '.'); j >= 0 {
					short = path[j+1:]
				}
				if !strings.Contains(string(doc), "`"+path+"`") && !strings.Contains(string(doc), "`"+short+"`") {
					t.Errorf("config key %s is not documented in docs/CONFIG.md", path)
				}
			}
			walk(path, v)
		}
	}
	walk("", &root)
}
