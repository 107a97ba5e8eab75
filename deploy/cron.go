package deploy

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strings"
)

// CronJob is one line of a system crontab (/etc/cron.d format: five time fields, a user, a
// command) and the recstream invocations in its command.
type CronJob struct {
	Line     int
	Schedule string     // the five time fields, e.g. "0 2 * * *"
	User     string     // the user the job runs as
	Command  string     // the shell command
	Runs     [][]string // argv (after the binary) of each recstream invocation, in order
}

// ReadCrontab parses a system crontab. Comment and blank lines and VAR=value lines are
// skipped; a job line must have five time fields, a user and a command. A recstream invocation
// is a word ending in "/recstream" or equal to "recstream", followed by its arguments up to the
// first shell operator or redirection (;, &&, ||, |, >, >>, 2>&1, <).
func ReadCrontab(path string) ([]CronJob, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return ParseCrontab(path, f)
}

// ParseCrontab is ReadCrontab on r; name labels errors.
func ParseCrontab(path string, r io.Reader) ([]CronJob, error) {
	var jobs []CronJob
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if i := strings.IndexByte(line, '='); i > 0 && !strings.ContainsAny(line[:i], " \t") {
			continue // environment assignment
		}
		fields := strings.Fields(line)
		if len(fields) < 7 {
			return nil, fmt.Errorf("%s:%d: want 5 time fields, a user and a command", path, n)
		}
		if strings.Contains(line, "%") {
			return nil, fmt.Errorf("%s:%d: unescaped %% (cron turns it into a newline)", path, n)
		}
		job := CronJob{Line: n, Schedule: strings.Join(fields[:5], " "), User: fields[5], Command: strings.Join(fields[6:], " ")}
		for i := 6; i < len(fields); i++ {
			w := fields[i]
			if w != "recstream" && !strings.HasSuffix(w, "/recstream") {
				continue
			}
			var argv []string
			for i++; i < len(fields) && !isShellOperator(fields[i]); i++ {
				argv = append(argv, strings.TrimRight(fields[i], ";"))
				if strings.HasSuffix(fields[i], ";") {
					break
				}
			}
			i--
			job.Runs = append(job.Runs, argv)
		}
		jobs = append(jobs, job)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return jobs, nil
}

func isShellOperator(w string) bool {
	switch w {
	case ";", "&&", "||", "|", "&":
		return true
	}
	return strings.HasPrefix(w, ">") || strings.HasPrefix(w, "<") || strings.HasPrefix(w, "2>") || strings.HasPrefix(w, "1>")
}
