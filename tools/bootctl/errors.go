package main

import (
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// fieldAnnotation prefixes the annotations that tell which flag (or argument)
// of a command sets an API field: "bootctl/field:machine.default_profile" ->
// "--profile".
const fieldAnnotation = "bootctl/field:"

// withFields records on cmd which flag sets which request field, so that an
// InvalidArgument naming the field is told in the command's own words.
func withFields(cmd *cobra.Command, fields map[string]string) *cobra.Command {
	if cmd.Annotations == nil {
		cmd.Annotations = map[string]string{}
	}
	for f, flag := range fields {
		cmd.Annotations[fieldAnnotation+f] = flag
	}
	return cmd
}

// explain phrases err for the person who typed cmd: flags instead of API
// fields, the address flag to check when a service cannot be reached.
func explain(cmd *cobra.Command, g *Global, err error) string {
	var ue *usageError
	if errors.As(err, &ue) {
		return ue.msg
	}
	st, ok := status.FromError(err)
	if !ok {
		return err.Error()
	}
	svc := g.lastService()
	switch st.Code() {
	case codes.Unavailable:
		return fmt.Sprintf("cannot reach %s at %s (is it running? set --%s)", svc, g.Addrs[svc], addrFlag(svc))
	case codes.DeadlineExceeded:
		return fmt.Sprintf("%s at %s did not answer within %s (set --timeout)", svc, g.Addrs[svc], g.Timeout)
	case codes.InvalidArgument, codes.FailedPrecondition:
		if field, desc := violation(st); field != "" {
			// Validation messages often start with the field's own name again.
			last := field[strings.LastIndexByte(field, '.')+1:]
			desc = strings.TrimPrefix(strings.TrimPrefix(desc, field+": "), last+": ")
			msg := flagFor(cmd, field) + ": " + cliWords(cmd, desc)
			if strings.Contains(desc, "TemplateData") {
				msg += " (bootctl profiles fields lists what a template may use)"
			}
			return msg
		}
	case codes.NotFound, codes.AlreadyExists, codes.Aborted, codes.Canceled:
		return cliWords(cmd, st.Message())
	}
	return fmt.Sprintf("%s: %s: %s", svc, st.Code(), cliWords(cmd, st.Message()))
}

// violation returns the first field a status blames, and why.
func violation(st *status.Status) (field, desc string) {
	for _, d := range st.Details() {
		switch d := d.(type) {
		case *errdetails.BadRequest:
			if v := d.GetFieldViolations(); len(v) > 0 {
				return v[0].GetField(), v[0].GetDescription()
			}
		case *errdetails.PreconditionFailure:
			if v := d.GetViolations(); len(v) > 0 {
				return v[0].GetSubject(), v[0].GetDescription()
			}
		}
	}
	return "", ""
}

// flagFor names the flag or argument of cmd that sets an API field. A field
// inside a map or list ("machine.labels[rack]") is looked up by its parents.
func flagFor(cmd *cobra.Command, field string) string {
	for f := field; f != ""; {
		if flag, ok := cmd.Annotations[fieldAnnotation+f]; ok {
			return flag
		}
		if i := strings.LastIndexAny(f, ".["); i >= 0 {
			f = f[:i]
		} else {
			break
		}
	}
	return field
}

// enumValue matches the API's enum values that a message may name.
var enumValue = regexp.MustCompile(`\b(ACTION|JOB_STATE|SESSION_STATE|LEASE_STATE|DISCOVERY_POLICY|DHCP_MODE)_([A-Z0-9_]+)\b`)

// cliWords rewrites the API field names and enum values in msg as the flags and
// words of cmd: "required when default_action is ACTION_PROFILE" -> "required
// when --action is profile".
func cliWords(cmd *cobra.Command, msg string) string {
	var fields []string
	for k := range cmd.Annotations {
		if f, ok := strings.CutPrefix(k, fieldAnnotation); ok {
			fields = append(fields, f)
		}
	}
	// Longest first, so "machine.default_profile" goes before "default_profile".
	sort.Slice(fields, func(i, j int) bool {
		return len(fields[i]) > len(fields[j]) || len(fields[i]) == len(fields[j]) && fields[i] < fields[j]
	})
	var pairs []string
	for _, f := range fields {
		flag := cmd.Annotations[fieldAnnotation+f]
		// Only names that cannot be English words of the message are replaced:
		// "machine.default_profile" and "default_profile", not "name" or "mac".
		if strings.ContainsAny(f, "._") {
			pairs = append(pairs, f, flag)
		}
		if i := strings.LastIndexByte(f, '.'); i >= 0 && strings.Contains(f[i+1:], "_") {
			pairs = append(pairs, f[i+1:], flag)
		}
	}
	msg = enumValue.ReplaceAllStringFunc(msg, func(s string) string {
		m := enumValue.FindStringSubmatch(s)
		return strings.ReplaceAll(strings.ToLower(m[2]), "_", "-")
	})
	for i := 0; i < len(pairs); i += 2 {
		msg = replaceWord(msg, pairs[i], pairs[i+1])
	}
	return msg
}

// replaceWord replaces old in s where it stands as a word of its own (not
// inside "default_profile_x" or "machine.default_profile" once replaced).
func replaceWord(s, old, new string) string {
	re := regexp.MustCompile(`(^|[^\w.-])` + regexp.QuoteMeta(old) + `($|[^\w-])`)
	return re.ReplaceAllString(s, "${1}"+strings.ReplaceAll(new, "$", "$$")+"${2}")
}
