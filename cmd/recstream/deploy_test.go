package main

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/recstream/recstream/deploy"
)

// TestDeployCommandLines runs every command line of the deployment files through the binary's
// own flag parsing and config loading (--check-args stops after a successful parse): each ECS
// container's command, with that container's environment overrides and stand-ins for its
// secrets, and each recstream invocation in the host crontab. A subcommand that is not
// registered, a misspelt flag or an environment override the config rejects fails here.
func TestDeployCommandLines(t *testing.T) {
	files, err := deploy.Files("../../deploy/ecs", "taskdef-*.json")
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	for _, f := range files {
		td, err := deploy.LoadTaskDefinition(f, deploy.Placeholders)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range td.ContainerDefinitions {
			var names, values, secrets []string
			for _, kv := range c.Environment {
				names = append(names, *kv.Name)
				values = append(values, *kv.Value)
			}
			for _, s := range c.Secrets {
				secrets = append(secrets, *s.Name)
			}
			name := filepath.Base(f) + "/" + *c.Name
			t.Run(name, func(t *testing.T) {
				checkCommandLine(t, c.Command, deploy.EnvMap(names, values, secrets))
			})
			checked++
		}
	}
	jobs, err := deploy.ReadCrontab("../../deploy/cron/recstream.crontab")
	if err != nil {
		t.Fatal(err)
	}
	for _, j := range jobs {
		for _, argv := range j.Runs {
			t.Run("crontab:"+strings.Join(argv, " "), func(t *testing.T) {
				// The host's config lives in /etc/recstream; check the same flags against ours.
				args := append([]string(nil), argv...)
				for i := range args {
					if args[i] == "--config" && i+1 < len(args) {
						args = append(args[:i], args[i+2:]...)
						break
					}
				}
				checkCommandLine(t, args, []string{"RECSTREAM_MYSQL_PASSWORD=stand-in", "RECSTREAM_POSTGRES_PASSWORD=stand-in"})
			})
			checked++
		}
	}
	if checked < 6 {
		t.Fatalf("checked %d command lines, want at least 6 (worker, etl, train, embeddings in ECS and cron)", checked)
	}
}

func checkCommandLine(t *testing.T, command, env []string) {
	t.Helper()
	if len(command) == 0 {
		t.Fatal("empty command")
	}
	var out, errb bytes.Buffer
	args := append([]string{"--config", "../../config.yaml", "--check-args"}, command...)
	if code := run(context.Background(), args, env, &out, &errb); code != exitOK {
		t.Errorf("recstream %s: exit %d, want 0\nstderr: %s", strings.Join(args, " "), code, errb.String())
	}
}

// TestCheckArgsRejectsBadCommandLine keeps the check above honest: a misspelt flag and an
// unknown subcommand do not pass --check-args.
func TestCheckArgsRejectsBadCommandLine(t *testing.T) {
	for _, command := range [][]string{{"migrate", "--no-such-flag"}, {"no-such-command"}} {
		var out, errb bytes.Buffer
		args := append([]string{"--config", "../../config.yaml", "--check-args"}, command...)
		if code := run(context.Background(), args, nil, &out, &errb); code != exitUsage {
			t.Errorf("recstream %s: exit %d, want %d", strings.Join(args, " "), code, exitUsage)
		}
	}
}
