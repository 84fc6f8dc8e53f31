package e2e

import (
	"bytes"
	"encoding/json"
	"errors"
	"go/parser"
	"go/token"
	"io"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
)

// module is the import path of the repository's module.
const module = "github.com/portcullis-gw/portcullis"

// none is the "only" of a package that imports nothing from the project.
var none = []string{}

// vocabulary is the package of reasons: a leaf every layer may name.
const vocabulary = "audit/reason"

// importRule is one package's import rule, as its package doc comment
// states it. Paths are relative to the module; an entry of never or only
// names that package and every package below it ("gateway" covers
// gateway/frame too). The vocabulary leaf audit/reason is the exception: a
// "never audit" rule means the trail, not the reasons every layer names.
type importRule struct {
	pkg   string   // the package the rule is about
	only  []string // when non-nil: the only project packages pkg may import
	never []string // project packages pkg must never import
	// except are packages under never that pkg may import all the same:
	// leaves that import nothing from the project (gateway/reactor).
	except []string
	says   string // the sentence of pkg's doc comment that states the rule
}

// importRules mirrors the "imports nothing / imports only / never imports"
// line of every package's doc comment; TestImportRules checks both the
// imports and that the doc comment still says so. Besides these, no
// package imports a command's packages (cmd/...) except that command, and
// every library package has a row here.
var importRules = []importRule{
	// audit: the bottom layer; everything emits into it.
	{pkg: "audit", never: []string{"gateway", "policy", "alerting", "audit/query"},
		says: "audit imports nothing from gateway, policy, alerting or audit/query"},
	{pkg: "audit/chain", only: none, says: "chain imports nothing from the rest of Portcullis"},
	{pkg: "audit/index", only: none, says: "index imports nothing from the rest of Portcullis"},
	{pkg: "audit/verify", only: []string{"audit/chain"}, says: "verify imports only audit/chain"},
	{pkg: "audit/reason", only: none, says: "It imports nothing from the project"},
	{pkg: "audit/query", only: []string{"audit", "audit/index"},
		says: "it imports only audit and audit/index from the project, nothing from gateway, policy or alerting"},

	// policy: decisions; never the network core, never the alerts. Only
	// guard emits audit events itself (bans and unbans with their actor).
	{pkg: "policy/statefile", only: none, says: "It imports nothing from the project"},
	{pkg: "policy/blocklist", only: none,
		says: "It imports only the standard library and never imports gateway, audit or alerting"},
	{pkg: "policy/clientip", only: []string{vocabulary},
		says: "It imports only audit/reason from the project and must never import gateway/ or the rest of audit/"},
	{pkg: "policy/decision", only: []string{vocabulary},
		says: "It imports only audit/reason from the project and must never import gateway/ or the rest of audit/"},
	{pkg: "policy/origin", only: []string{vocabulary},
		says: "This package imports only audit/reason from the project and must never import gateway/ or the rest of audit/"},
	{pkg: "policy/topics", only: []string{vocabulary},
		says: "It imports only audit/reason from the project and must never import"},
	{pkg: "policy/schema", only: []string{vocabulary},
		says: "It imports nothing from gateway, audit or alerting, and only reason from the rest of the project"},
	{pkg: "policy/ratelimit", only: []string{vocabulary},
		says: "It imports only the standard library, golang.org/x/time/rate and audit/reason, and never imports gateway, alerting or the rest of audit"},
	{pkg: "policy/bans", never: []string{"gateway", "audit", "alerting"},
		says: "It never imports gateway, audit or alerting"},
	{pkg: "policy/tokens", never: []string{"gateway", "audit", "alerting"},
		says: "It imports nothing from gateway, audit or alerting"},
	{pkg: "policy/tokens/redistokens", never: []string{"gateway", "audit", "alerting"},
		says: "It imports nothing from gateway, audit or alerting"},
	{pkg: "policy/tokens/sqltokens", never: []string{"gateway", "audit", "alerting"},
		says: "It imports nothing from gateway, audit or alerting"},
	{pkg: "policy/bans/redisbans", never: []string{"gateway", "audit", "alerting"},
		says: "It imports nothing from gateway, audit or alerting"},
	{pkg: "policy/lease", never: []string{"gateway", "audit", "alerting"},
		says: "It imports nothing from gateway, audit or alerting"},
	{pkg: "policy/jwt", never: []string{"gateway", "audit", "alerting"},
		says: "The package imports nothing from gateway, audit or alerting"},
	{pkg: "policy/guard", never: []string{"gateway", "alerting"},
		says: "guard imports audit (it emits events) but never gateway or alerting"},

	// alerting: reads audit events; keeps its outbox with policy/statefile,
	// the bbolt opener that itself imports nothing from the project.
	{pkg: "alerting", never: []string{"gateway", "policy/bans", "policy/blocklist",
		"policy/clientip", "policy/guard", "policy/jwt", "policy/origin", "policy/ratelimit",
		"policy/schema", "policy/tokens", "policy/topics"},
		says: "alerting imports audit and policy/statefile (the bbolt opener, for its outbox), nothing else from policy and nothing from gateway or cmd"},

	// gateway: the network core; never the alerts, never a command.
	{pkg: "gateway", never: []string{"alerting"}, says: "it never imports alerting or cmd"},
	{pkg: "gateway/admin", never: []string{"alerting"}, says: "never imports cmd or alerting"},
	{pkg: "gateway/reactor", only: none, says: "reactor imports nothing from the project"},
	{pkg: "gateway/config", only: none, says: "config imports nothing from the project"},
	{pkg: "clients/js", only: none, says: "jsclient imports nothing from the project"},
	{pkg: "gateway/frame", only: none, says: "It must never import other project packages"},
	{pkg: "gateway/native", only: []string{vocabulary, "audit"},
		says: "native imports only audit/reason and audit (its JSON string encoder) from the project"},
	{pkg: "gateway/wamp", only: []string{"gateway/native"},
		says: "It imports only the standard library and gateway/native (for its JSON string encoder); it must never import policy, audit or the gateway itself"},
	{pkg: "gateway/feed", never: []string{"gateway", "alerting"}, says: "feed imports nothing from gateway"},
	{pkg: "gateway/cluster", never: []string{"alerting"}, says: "it never imports alerting or cmd"},
	{pkg: "gateway/tlsfront", only: []string{"audit/reason", "gateway/reactor"},
		says: "it never imports the gateway, policy or audit packages"},
	{pkg: "gateway/metrics", only: []string{"audit", "policy/bans"},
		says: "metrics imports only audit, audit/reason and policy/bans from the project"},

	// Test support: a throw-away redis-server.
	{pkg: "policy/redistest", only: none, says: "redistest imports nothing from the project"},
	{pkg: "policy/sqltest", only: none, says: "sqltest imports nothing from the project"},

	// The assembler of serve: under the commands, above everything else.
	{pkg: "cmd/internal/app", never: []string{"cmd/portcullis", "cmd/portcullis-bench"},
		says: "app imports no command package"},

	// The load generator talks to the gateway only over the wire; its
	// io_uring floor sends with the reactor's Ring, a leaf.
	{pkg: "cmd/portcullis-bench", never: []string{"gateway", "policy", "audit", "alerting"}, except: []string{"gateway/reactor"},
		says: "imports nothing from gateway, policy or audit but gateway/reactor's Ring"},
}

// goPackage is what TestImportRules reads of `go list -json`.
type goPackage struct {
	ImportPath string
	Name       string
	Dir        string
	GoFiles    []string
	Imports    []string
}

// listPackages runs `go list -e -json ./...` at the repository root and
// returns the module's packages keyed by path relative to the module. With
// -e a package that does not compile still lists its imports: compiling is
// the other tests' business, the import graph is this one's.
func listPackages(t *testing.T) map[string]goPackage {
	t.Helper()
	cmd := exec.Command("go", "list", "-e", "-json", "./...")
	cmd.Dir = ".."
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list -e -json ./...: %v\n%s", err, stderr.String())
	}
	pkgs := map[string]goPackage{}
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p goPackage
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("decode go list output: %v", err)
		}
		rel, ok := relPath(p.ImportPath)
		if !ok {
			t.Fatalf("go list ./... listed %s, outside module %s", p.ImportPath, module)
		}
		pkgs[rel] = p
	}
	if len(pkgs) == 0 {
		t.Fatal("go list ./... listed no package")
	}
	return pkgs
}

// relPath is path relative to the module, and whether it is in it.
func relPath(path string) (string, bool) {
	if path == module {
		return "", true
	}
	rel, ok := strings.CutPrefix(path, module+"/")
	return rel, ok
}

// under reports whether pkg is tree or a package below it.
func under(pkg, tree string) bool {
	return pkg == tree || strings.HasPrefix(pkg, tree+"/")
}

// projectImports returns the project packages p imports, relative to the
// module, sorted.
func projectImports(p goPackage) []string {
	var out []string
	for _, imp := range p.Imports {
		if rel, ok := relPath(imp); ok {
			out = append(out, rel)
		}
	}
	sort.Strings(out)
	return out
}

// packageDoc returns the package doc comments of p's non-test files, with
// the comment markers removed and every run of white space made one space.
func packageDoc(t *testing.T, p goPackage) string {
	t.Helper()
	var docs []string
	fset := token.NewFileSet()
	for _, f := range p.GoFiles {
		af, err := parser.ParseFile(fset, filepath.Join(p.Dir, f), nil, parser.PackageClauseOnly|parser.ParseComments)
		if err != nil {
			t.Fatalf("parse %s: %v", f, err)
		}
		if af.Doc != nil {
			docs = append(docs, af.Doc.Text())
		}
	}
	return strings.Join(strings.Fields(strings.Join(docs, " ")), " ")
}

// TestImportRules enforces the layering every package's doc comment
// states: the `go list` import graph of the non-test code must break no
// rule of importRules, each rule must still be stated in its package's
// doc comment, every library package must have a rule, and only a command
// imports its own packages under cmd/.
func TestImportRules(t *testing.T) {
	pkgs := listPackages(t)

	ruled := map[string]bool{}
	for _, r := range importRules {
		ruled[r.pkg] = true
		p, ok := pkgs[r.pkg]
		if !ok {
			t.Errorf("rule for %s: no such package (moved? update importRules)", r.pkg)
			continue
		}
		if doc := packageDoc(t, p); !strings.Contains(doc, r.says) {
			t.Errorf("%s: its doc comment no longer says %q; keep the doc comment and importRules saying the same thing", r.pkg, r.says)
		}
		for _, ex := range r.except {
			if q, ok := pkgs[ex]; !ok || len(projectImports(q)) > 0 {
				t.Errorf("%s may import %s as a leaf, but it is missing or imports from the project", r.pkg, ex)
			}
		}
		for _, imp := range projectImports(p) {
			if r.only != nil && !underAny(imp, r.only) {
				t.Errorf("%s imports %s, but it may import only %v from the project (%q)", r.pkg, imp, r.only, r.says)
			}
			for _, bad := range r.never {
				if under(imp, bad) && imp != vocabulary && !slices.Contains(r.except, imp) {
					t.Errorf("%s imports %s, but it must never import %s (%q)", r.pkg, imp, bad, r.says)
				}
			}
		}
	}

	for rel, p := range pkgs {
		// Only a command imports its own packages: cmd/x/... may import
		// cmd/x/..., and the commands (only they) cmd/internal/...;
		// nothing else imports anything under cmd/.
		for _, imp := range projectImports(p) {
			if !under(imp, "cmd") {
				continue
			}
			parts := strings.SplitN(imp, "/", 3)
			if under(imp, "cmd/internal") && under(rel, "cmd") {
				continue
			}
			if !under(rel, parts[0]+"/"+parts[1]) {
				t.Errorf("%s imports %s: no package imports another command's code", rel, imp)
			}
		}
		// Every library package states its rule (commands and the e2e
		// tests sit on top and may import anything of the project).
		if p.Name != "main" && len(p.GoFiles) > 0 && !ruled[rel] {
			t.Errorf("package %s has no import rule: say in its doc comment what it must never import and add that line to importRules", rel)
		}
	}

	// The layers as a whole: no gateway package imports the alerts; no
	// policy package imports the network core or the alerts, and of them
	// only guard imports audit.
	for rel, p := range pkgs {
		if under(rel, "gateway") {
			for _, imp := range projectImports(p) {
				if under(imp, "alerting") {
					t.Errorf("%s imports %s: no gateway package imports alerting", rel, imp)
				}
			}
		}
		if !under(rel, "policy") {
			continue
		}
		for _, imp := range projectImports(p) {
			for _, bad := range []string{"gateway", "alerting"} {
				if under(imp, bad) {
					t.Errorf("%s imports %s: no policy package imports %s", rel, imp, bad)
				}
			}
			if under(imp, "audit") && imp != vocabulary && rel != "policy/guard" {
				t.Errorf("%s imports %s: of the policy packages only policy/guard emits audit events", rel, imp)
			}
		}
	}
}

// underAny reports whether pkg is under any of trees.
func underAny(pkg string, trees []string) bool {
	for _, tr := range trees {
		if under(pkg, tr) {
			return true
		}
	}
	return false
}
