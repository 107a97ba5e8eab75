package deploy

import (
	"bufio"
	"fmt"
	"os"
	"strings"
)

// Instruction is one Dockerfile instruction with its continuation lines joined.
type Instruction struct {
	Line  int    // line of the instruction's first line
	Cmd   string // upper case: FROM, RUN, COPY, ...
	Args  string // the rest, continuations joined with spaces
	Stage int    // index of the build stage (0 = first FROM)
}

// ReadDockerfile splits a Dockerfile into instructions. Comments, parser directives and blank
// lines are dropped; a line ending in a backslash continues on the next.
func ReadDockerfile(path string) ([]Instruction, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []Instruction
	var cur strings.Builder
	start, stage := 0, -1
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if cur.Len() == 0 && (line == "" || strings.HasPrefix(line, "#")) {
			continue
		}
		if cur.Len() == 0 {
			start = n
		}
		cont := strings.HasSuffix(line, "\\")
		cur.WriteString(strings.TrimSuffix(line, "\\"))
		if cont {
			cur.WriteByte(' ')
			continue
		}
		cmd, args, _ := strings.Cut(cur.String(), " ")
		cur.Reset()
		cmd = strings.ToUpper(cmd)
		if cmd == "FROM" {
			stage++
		}
		out = append(out, Instruction{Line: start, Cmd: cmd, Args: strings.TrimSpace(args), Stage: stage})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if cur.Len() > 0 {
		return nil, fmt.Errorf("%s:%d: continuation at end of file", path, start)
	}
	return out, nil
}

// ShellWords splits a shell command line into words, honouring single and double quotes and
// backslash escapes (no expansion). It returns an error for an unterminated quote.
func ShellWords(s string) ([]string, error) {
	var words []string
	var w strings.Builder
	inWord := false
	var quote rune
	for i := 0; i < len(s); i++ {
		c := rune(s[i])
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			} else if c == '\\' && quote == '"' && i+1 < len(s) {
				i++
				w.WriteByte(s[i])
			} else {
				w.WriteRune(c)
			}
		case c == '\'' || c == '"':
			quote, inWord = c, true
		case c == '\\' && i+1 < len(s):
			i++
			w.WriteByte(s[i])
			inWord = true
		case c == ' ' || c == '\t' || c == '\n':
			if inWord {
				words = append(words, w.String())
				w.Reset()
				inWord = false
			}
		default:
			w.WriteRune(c)
			inWord = true
		}
	}
	if quote != 0 {
		return nil, fmt.Errorf("unterminated %c quote in %q", quote, s)
	}
	if inWord {
		words = append(words, w.String())
	}
	return words, nil
}

// EnvPairs parses the arguments of an ENV instruction in its key=value form (values may be
// quoted) into "key=value" strings.
func EnvPairs(args string) ([]string, error) {
	words, err := ShellWords(args)
	if err != nil {
		return nil, err
	}
	for _, w := range words {
		if k, _, ok := strings.Cut(w, "="); !ok || k == "" {
			return nil, fmt.Errorf("ENV %q: want key=value pairs", args)
		}
	}
	return words, nil
}
