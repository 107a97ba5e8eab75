package awsenv

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsmw "github.com/aws/aws-sdk-go-v2/aws/middleware"
	"github.com/aws/smithy-go/middleware"
)

// OpLogEnv names a file to which every process appends each distinct AWS API operation it
// calls ("Kinesis:PutRecords"). The deployment tests compare that set with the IAM policies,
// so the policies grant exactly what the code calls. Unset in production.
const OpLogEnv = "RECSTREAM_AWS_OPLOG"

var (
	opMu   sync.Mutex
	opSeen = map[string]bool{}
	opTag  = filepath.Base(os.Args[0])
)

// SetOpLogTag names the caller in recorded lines ("worker Kinesis:GetRecords"); cmd sets it to
// the subcommand so the policy check can tell the worker's calls from the batch jobs'.
func SetOpLogTag(tag string) {
	opMu.Lock()
	opTag = tag
	opMu.Unlock()
}

// opLogOption returns an Option that records operations to path.
func opLogOption(path string) Option {
	return func(cfg *aws.Config) {
		cfg.APIOptions = append(cfg.APIOptions, func(stack *middleware.Stack) error {
			return stack.Initialize.Add(middleware.InitializeMiddlewareFunc("recstreamOpLog",
				func(ctx context.Context, in middleware.InitializeInput, next middleware.InitializeHandler) (middleware.InitializeOutput, middleware.Metadata, error) {
					recordOp(path, awsmw.GetServiceID(ctx)+":"+awsmw.GetOperationName(ctx))
					return next.HandleInitialize(ctx, in)
				}), middleware.After)
		})
	}
}

func recordOp(path, op string) {
	opMu.Lock()
	defer opMu.Unlock()
	op = opTag + "\t" + op
	if opSeen[op] {
		return
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return // a test aid; never fail a call because of it
	}
	defer f.Close()
	if _, err := fmt.Fprintln(f, op); err == nil {
		opSeen[op] = true
	}
}

// envOptions returns the options every client gets from the environment.
func envOptions() []Option {
	if p := os.Getenv(OpLogEnv); p != "" {
		return []Option{opLogOption(p)}
	}
	return nil
}
