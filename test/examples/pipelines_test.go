// Package examples checks that the example pipelines in examples/ cannot rot: every `kubectl mlrollout`,
// `kubectl mlhealth` and `helm acrpush` command line they run is accepted by the flag parsers of the
// plugins built from this repository, every script is valid bash, and examples/rollout-plan.yaml goes
// through mlrollout's own plan parser (plan_test.go).
package examples

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"sigs.k8s.io/yaml"

	acrpush "github.com/aks-mlops/mlplugins/plugins/helm-acrpush/cmd"
	mlhealth "github.com/aks-mlops/mlplugins/plugins/kubectl-mlhealth/cmd"
	mlrollout "github.com/aks-mlops/mlplugins/plugins/kubectl-mlrollout/cmd"
)

// plugins maps the words that invoke a plugin to the constructor of its cobra root.
var plugins = map[string]func(genericiooptions.IOStreams) *cobra.Command{
	"kubectl mlrollout": mlrollout.NewCmdRoot,
	"kubectl mlhealth":  mlhealth.NewCmdRoot,
	"helm acrpush":      acrpush.NewCmdRoot,
}

// computed are realistic values for variables the scripts compute at run time.
var computed = map[string]string{
	"NEW_IMAGE":     "mlappacr.azurecr.io/release/mlapp/model-server@sha256:" + strings.Repeat("ab", 32),
	"SERVING":       "mlappacr.azurecr.io/release/mlapp/model-server@sha256:" + strings.Repeat("cd", 32),
	"CHART_VERSION": "0.1.0",
}

// scriptKeys are the step keys whose values are shell scripts (Azure DevOps script/bash and AzureCLI@2's
// inlineScript; GitHub Actions run).
var scriptKeys = map[string]bool{"script": true, "bash": true, "inlineScript": true, "run": true}

func repoRoot(t *testing.T) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// pipeline is one parsed pipeline file.
type pipeline struct {
	file    string
	doc     any
	vars    map[string]string // pipeline-level variables / env
	scripts []script
}

type script struct {
	where string // a path into the YAML, for messages
	text  string
	step  map[string]any // the step holding the script
}

func loadPipeline(t *testing.T, name string) *pipeline {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot(t), "examples", name))
	if err != nil {
		t.Fatal(err)
	}
	var doc any
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	p := &pipeline{file: name, doc: doc, vars: map[string]string{}}
	if m, ok := doc.(map[string]any); ok {
		for _, key := range []string{"variables", "env"} {
			if vs, ok := m[key].(map[string]any); ok {
				for k, v := range vs {
					p.vars[k] = fmt.Sprint(v)
				}
			}
		}
	}
	var walk func(v any, path string, parent map[string]any)
	walk = func(v any, path string, parent map[string]any) {
		switch x := v.(type) {
		case map[string]any:
			keys := make([]string, 0, len(x))
			for k := range x {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				if s, ok := x[k].(string); ok && scriptKeys[k] {
					step := x
					if k == "inlineScript" && parent != nil {
						step = parent
					}
					p.scripts = append(p.scripts, script{where: path + "." + k, text: s, step: step})
					continue
				}
				walk(x[k], path+"."+k, x)
			}
		case []any:
			for i, e := range x {
				walk(e, fmt.Sprintf("%s[%d]", path, i), parent)
			}
		}
	}
	walk(doc, "", nil)
	if len(p.scripts) == 0 {
		t.Fatalf("%s: no script steps found", name)
	}
	return p
}

var (
	adoMacro   = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_.]*)\)`)
	ghExpr     = regexp.MustCompile(`\$\{\{\s*([^}]*?)\s*\}\}`)
	shellBrace = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}`)
	shellVar   = regexp.MustCompile(`\$([A-Za-z_][A-Za-z0-9_]*)`)
)

// value is what a variable stands for in a checked command line.
func (p *pipeline) value(name string) string {
	if v, ok := computed[name]; ok {
		return v
	}
	if v, ok := p.vars[name]; ok {
		return p.expand(v)
	}
	return "placeholder-" + strings.ToLower(strings.NewReplacer(".", "-", "_", "-").Replace(name))
}

// expand replaces Azure DevOps macros $(X), GitHub expressions ${{ x }} and shell variables with values.
func (p *pipeline) expand(s string) string {
	s = adoMacro.ReplaceAllStringFunc(s, func(m string) string { return p.value(adoMacro.FindStringSubmatch(m)[1]) })
	s = ghExpr.ReplaceAllStringFunc(s, func(m string) string {
		e := ghExpr.FindStringSubmatch(m)[1]
		if name, ok := strings.CutPrefix(e, "env."); ok {
			return p.value(name)
		}
		return "placeholder-expr"
	})
	s = shellBrace.ReplaceAllStringFunc(s, func(m string) string { return p.value(shellBrace.FindStringSubmatch(m)[1]) })
	return shellVar.ReplaceAllStringFunc(s, func(m string) string { return p.value(shellVar.FindStringSubmatch(m)[1]) })
}

// commandLine is one invocation of a plugin found in a script.
type commandLine struct {
	where  string
	plugin string   // "kubectl mlrollout", ...
	args   []string // after the plugin words, variables expanded
	raw    string
}

// commands finds every plugin invocation in the pipeline's scripts.
func (p *pipeline) commands(t *testing.T) []commandLine {
	t.Helper()
	var out []commandLine
	for _, s := range p.scripts {
		for _, line := range logicalLines(s.text) {
			if !mentionsPlugin(line) {
				continue // other tools' lines may use shell syntax the splitter does not model
			}
			words, err := shellWords(p.expand(line))
			if err != nil {
				t.Fatalf("%s %s: %q: %v", p.file, s.where, line, err)
			}
			for _, cmd := range simpleCommands(words) {
				if len(cmd) < 2 {
					continue
				}
				if _, ok := plugins[cmd[0]+" "+cmd[1]]; ok {
					out = append(out, commandLine{where: s.where, plugin: cmd[0] + " " + cmd[1], args: cmd[2:], raw: line})
				}
			}
		}
	}
	return out
}

func mentionsPlugin(line string) bool {
	for words := range plugins {
		if strings.Contains(line, words) {
			return true
		}
	}
	return false
}

// logicalLines joins backslash continuations and drops comments and blank lines.
func logicalLines(text string) []string {
	var out []string
	var cur strings.Builder
	for _, l := range strings.Split(text, "\n") {
		trimmed := strings.TrimSpace(l)
		if cur.Len() == 0 && (trimmed == "" || strings.HasPrefix(trimmed, "#")) {
			continue
		}
		if strings.HasSuffix(trimmed, `\`) {
			cur.WriteString(strings.TrimSuffix(trimmed, `\`))
			cur.WriteByte(' ')
			continue
		}
		cur.WriteString(trimmed)
		out = append(out, cur.String())
		cur.Reset()
	}
	if cur.Len() > 0 {
		out = append(out, cur.String())
	}
	return out
}

// shellWords splits a line into words like a POSIX shell (quotes and backslashes), returning the
// unquoted control operators ; | || && as words of their own.
func shellWords(s string) ([]string, error) {
	var words []string
	var cur strings.Builder
	inWord := false
	flush := func() {
		if inWord {
			words = append(words, cur.String())
			cur.Reset()
			inWord = false
		}
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == ' ' || c == '\t':
			flush()
		case c == '\'':
			j := strings.IndexByte(s[i+1:], '\'')
			if j < 0 {
				return nil, fmt.Errorf("unterminated single quote")
			}
			cur.WriteString(s[i+1 : i+1+j])
			inWord = true
			i += j + 1
		case c == '"':
			inWord = true
			i++
			for ; i < len(s) && s[i] != '"'; i++ {
				if s[i] == '\\' && i+1 < len(s) && strings.ContainsRune("\"\\$`", rune(s[i+1])) {
					i++
				}
				cur.WriteByte(s[i])
			}
			if i == len(s) {
				return nil, fmt.Errorf("unterminated double quote")
			}
		case c == '\\' && i+1 < len(s):
			i++
			cur.WriteByte(s[i])
			inWord = true
		case c == '>' || c == '<':
			// A redirection: drop a file-descriptor number before it, and keep the operator (with an
			// inline "&N" target) as one word that simpleCommands removes along with its target.
			if inWord && strings.Trim(cur.String(), "0123456789") == "" {
				cur.Reset()
				inWord = false
			}
			flush()
			op := string(c)
			for i+1 < len(s) && (s[i+1] == '>' || s[i+1] == '&') {
				op += string(s[i+1])
				i++
			}
			if strings.HasSuffix(op, "&") {
				for i+1 < len(s) && strings.IndexByte("0123456789-", s[i+1]) >= 0 {
					i++
				}
				words = append(words, redirDone)
				continue
			}
			words = append(words, redirect)
		case c == '&' && i+1 < len(s) && s[i+1] == '>':
			flush()
			i++
			if i+1 < len(s) && s[i+1] == '>' {
				i++
			}
			words = append(words, redirect)
		case c == ';' || c == '|' || c == '&':
			flush()
			op := string(c)
			if i+1 < len(s) && (s[i+1] == '|' || s[i+1] == '&') {
				op += string(s[i+1])
				i++
			}
			words = append(words, op)
		default:
			cur.WriteByte(c)
			inWord = true
		}
	}
	flush()
	return words, nil
}

// Markers shellWords leaves for redirections: redirect is followed by its target word, redirDone is not.
const (
	redirect  = "\x00redirect"
	redirDone = "\x00redirect-done"
)

// simpleCommands splits words at control operators and drops leading keywords (if, then, ...) and
// variable assignments, leaving each command's own words.
func simpleCommands(words []string) [][]string {
	var out [][]string
	var cur []string
	words = append(words, ";")
	for i := 0; i < len(words); i++ {
		w := words[i]
		switch w {
		case redirect:
			i++ // and its target
			continue
		case redirDone:
			continue
		case ";", "|", "||", "&&", "&":
			if len(cur) > 0 {
				out = append(out, cur)
			}
			cur = nil
			continue
		}
		if len(cur) == 0 {
			switch w {
			case "if", "then", "else", "elif", "do", "!", "time":
				continue
			}
			if strings.Contains(w, "=") && !strings.HasPrefix(w, "-") && !strings.HasPrefix(w, "=") {
				continue // VAR=value before the command
			}
		}
		cur = append(cur, w)
	}
	return out
}

// accept parses a command line with the plugin's own cobra tree, without running it: it finds the
// subcommand, parses its flags, and checks required flags, flag groups and the argument count.
func accept(plugin string, args []string) (string, error) {
	var out, errOut bytes.Buffer
	root := plugins[plugin](genericiooptions.IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut})
	cmd, rest, err := root.Find(args)
	if err != nil {
		return plugin, err
	}
	path := plugin
	if rel := strings.TrimPrefix(cmd.CommandPath(), root.CommandPath()); rel != "" {
		path += rel
	}
	if !cmd.Runnable() {
		return path, fmt.Errorf("%q is not a runnable command", path)
	}
	if err := cmd.ParseFlags(rest); err != nil {
		return path, err
	}
	if err := cmd.ValidateRequiredFlags(); err != nil {
		return path, err
	}
	if err := cmd.ValidateFlagGroups(); err != nil {
		return path, err
	}
	if err := cmd.ValidateArgs(cmd.Flags().Args()); err != nil {
		return path, err
	}
	return path, nil
}

func TestPipelineCommandsParse(t *testing.T) {
	for _, file := range []string{"azure-pipelines.yml", "github-actions.yml"} {
		t.Run(file, func(t *testing.T) {
			p := loadPipeline(t, file)
			cmds := p.commands(t)
			seen := map[string]int{}
			for _, c := range cmds {
				path, err := accept(c.plugin, c.args)
				if err != nil {
					t.Errorf("%s %s: %s %s\n  rejected by %s: %v", file, c.where, c.plugin, strings.Join(c.args, " "), path, err)
					continue
				}
				seen[path]++
				t.Logf("ok: %s %s", c.plugin, strings.Join(c.args, " "))
			}
			// The pipeline must really exercise each plugin, so an extraction bug cannot pass silently.
			for _, want := range []string{"kubectl mlrollout start", "kubectl mlhealth", "helm acrpush"} {
				if seen[want] == 0 {
					t.Errorf("%s runs no %q (found %v)", file, want, seen)
				}
			}
		})
	}
}

// TestPipelineScriptsAreBash runs `bash -n` on every script with the pipeline's variables expanded.
func TestPipelineScriptsAreBash(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Fatalf("bash is needed to check the scripts: %v", err)
	}
	for _, file := range []string{"azure-pipelines.yml", "github-actions.yml"} {
		p := loadPipeline(t, file)
		for _, s := range p.scripts {
			text := adoMacro.ReplaceAllStringFunc(s.text, func(m string) string { return p.value(adoMacro.FindStringSubmatch(m)[1]) })
			cmd := exec.Command(bash, "-n")
			cmd.Stdin = strings.NewReader(text)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Errorf("%s %s: bash -n: %v\n%s", file, s.where, err, out)
			}
		}
	}
}

// TestPipelinesSignInWithoutSecrets checks the sign-in wiring: in Azure DevOps every script that talks
// to Azure runs in an AzureCLI@2 task on the workload-identity service connection, and helm acrpush gets
// the federated token; in GitHub Actions every job that signs in has id-token: write and no secret.
func TestPipelinesSignInWithoutSecrets(t *testing.T) {
	root := repoRoot(t)
	ado := loadPipeline(t, "azure-pipelines.yml")
	for _, s := range ado.scripts {
		acr := runs(s.text, "helm acrpush")
		if !acr && !runs(s.text, "kubectl mlrollout") && !runs(s.text, "az ") {
			continue
		}
		if s.step["task"] != "AzureCLI@2" {
			t.Errorf("azure-pipelines.yml %s uses Azure outside an AzureCLI@2 task", s.where)
			continue
		}
		inputs, _ := s.step["inputs"].(map[string]any)
		if inputs["azureSubscription"] != "$(AZURE_SERVICE_CONNECTION)" || inputs["scriptType"] != "bash" {
			t.Errorf("azure-pipelines.yml %s: inputs %v", s.where, inputs)
		}
		if acr && (inputs["addSpnToEnvironment"] != true || !strings.Contains(s.text, "AZURE_FEDERATED_TOKEN_FILE")) {
			t.Errorf("azure-pipelines.yml %s: helm acrpush does not get the federated token", s.where)
		}
	}
	gh := loadPipeline(t, "github-actions.yml")
	b, _ := os.ReadFile(filepath.Join(root, "examples", "github-actions.yml"))
	if bytes.Contains(b, []byte("secrets.")) {
		t.Error("github-actions.yml reads a secret; OIDC needs none")
	}
	jobs, _ := gh.doc.(map[string]any)["jobs"].(map[string]any)
	for name, j := range jobs {
		job := j.(map[string]any)
		steps, _ := job["steps"].([]any)
		login := false
		for _, st := range steps {
			if uses, _ := st.(map[string]any)["uses"].(string); strings.HasPrefix(uses, "azure/login@") {
				login = true
			}
		}
		perms, _ := job["permissions"].(map[string]any)
		if login && perms["id-token"] != "write" {
			t.Errorf("github-actions.yml job %s signs in to Azure without id-token: write", name)
		}
	}
	// Files the pipelines name exist in the repository.
	for _, f := range []string{"examples/rollout-plan.yaml", "charts/mlapp/Chart.yaml", "examples/model-server/cmd/build-image/main.go"} {
		if _, err := os.Stat(filepath.Join(root, f)); err != nil {
			t.Error(err)
		}
	}
}

// runs reports whether a line of the script (not a comment) contains words.
func runs(text, words string) bool {
	for _, l := range logicalLines(text) {
		if strings.Contains(l, words) {
			return true
		}
	}
	return false
}

// TestExtraction pins the command-line extraction itself on a tricky script.
func TestExtraction(t *testing.T) {
	p := &pipeline{vars: map[string]string{"NS": "ml", "URL": "https://p.example"}}
	text := `set -euo pipefail
# kubectl mlhealth in a comment is ignored
if [ -n "$SERVING" ]; then
  kubectl mlrollout start app -n "$(NS)" --image m="$NEW_IMAGE" \
    --prometheus-url "${URL}" --timeout 30m
fi
X=1 helm acrpush ./chart "${REG}/p" --set a=b -o json 2>&1 >"$OUT" && kubectl mlhealth app -n $NS 2>/dev/null | tee out
az acr login --name x --expose-token | helm registry login x --password-stdin`
	p.scripts = []script{{where: "t", text: text}}
	var got []string
	for _, c := range p.commands(t) {
		got = append(got, c.plugin+" "+strings.Join(c.args, " "))
	}
	want := []string{
		"kubectl mlrollout start app -n ml --image m=" + computed["NEW_IMAGE"] + " --prometheus-url https://p.example --timeout 30m",
		"helm acrpush ./chart placeholder-reg/p --set a=b -o json",
		"kubectl mlhealth app -n ml",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestRejection proves accept is not a rubber stamp: bad flags, unknown subcommands and wrong
// argument counts are refused.
func TestRejection(t *testing.T) {
	for _, tt := range []struct {
		plugin string
		args   []string
	}{
		{"kubectl mlrollout", []string{"start", "app", "--no-such-flag"}},
		{"kubectl mlrollout", []string{"launch", "app"}},
		{"kubectl mlrollout", []string{"start"}},
		{"kubectl mlrollout", []string{"start", "app", "--timeout", "soon"}},
		{"kubectl mlhealth", []string{"app", "--fail-on"}},
		{"kubectl mlhealth", []string{"a", "b"}},
		{"helm acrpush", []string{"./chart"}},
		{"helm acrpush", []string{"./chart", "reg", "--jobs", "many"}},
	} {
		if path, err := accept(tt.plugin, tt.args); err == nil {
			t.Errorf("%s %v accepted by %s", tt.plugin, tt.args, path)
		}
	}
}
