package azure

import (
	"strings"
)

// TokenError is a failure to get an Entra ID token for a scope. Its text is one line (Condense);
// Unwrap gives the SDK's error, for errors.As.
type TokenError struct {
	Scope string
	Err   error
}

func (e *TokenError) Error() string {
	return "getting azure token for scope " + e.Scope + ": " + Condense(e.Err.Error())
}

func (e *TokenError) Unwrap() error { return e.Err }

// Condense turns the text of an Azure SDK error into one line that keeps every reason. azidentity
// reports a credential chain over many lines (a tab-indented line per credential tried) and azcore
// dumps a response between dashed rulers with a troubleshooting link: the rulers, links and blank
// lines go, "RESPONSE 403: 403 Forbidden" becomes " (HTTP 403)", the credentials tried are
// separated by "; ", and the other lines are joined with ": ".
func Condense(s string) string {
	var b strings.Builder
	inAttempts := false
	for _, raw := range strings.Split(s, "\n") {
		l := strings.Join(strings.Fields(raw), " ")
		switch {
		case l == "", strings.Trim(l, "-") == "", strings.HasPrefix(l, "To troubleshoot, visit"):
			continue
		case strings.HasPrefix(l, "RESPONSE "):
			code, _, _ := strings.Cut(strings.TrimPrefix(l, "RESPONSE "), ":")
			b.WriteString(" (HTTP " + code + ")")
			continue
		}
		// A credential of the chain is indented by one tab; its own details by two.
		attempt := strings.HasPrefix(raw, "\t") && !strings.HasPrefix(raw, "\t\t")
		if b.Len() > 0 {
			cur := b.String()
			switch {
			case attempt && inAttempts:
				b.WriteString("; ")
			case strings.HasSuffix(cur, ":") || strings.HasSuffix(cur, "."):
				b.WriteString(" ")
			default:
				b.WriteString(": ")
			}
		}
		inAttempts = inAttempts || attempt
		b.WriteString(l)
	}
	return b.String()
}
