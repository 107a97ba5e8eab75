package awsenv

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsmw "github.com/aws/aws-sdk-go-v2/aws/middleware"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go/middleware"
)

// OpLogEnv names a file to which every process appends each distinct AWS API operation it
// calls ("Kinesis:PutRecords"). The deployment tests compare that set with the IAM policies,
// so the policies grant exactly what the code calls. Unset in production.
const OpLogEnv = "RECSTREAM_AWS_OPLOG"

var (
	opMu    sync.Mutex
	opSeen  = map[string]bool{}
	opTag   = filepath.Base(os.Args[0])
	opClass func(bucket, key string) string
)

// SetOpLogS3Class makes S3 operations on the objects class names ("warehouse") recorded as
// "S3:PutObject@warehouse": the policy check then needs a grant scoped to that class's prefix
// (an Iceberg warehouse is not the Hive layout's year=/errors/). class gets the bucket and the
// key (a List's prefix) and returns "" for an object of no class.
func SetOpLogS3Class(class func(bucket, key string) string) {
	opMu.Lock()
	opClass = class
	opMu.Unlock()
}

// s3Target is the bucket and key (or list prefix) of an S3 operation's input.
func s3Target(params any) (bucket, key string, ok bool) {
	switch in := params.(type) {
	case *s3.PutObjectInput:
		return aws.ToString(in.Bucket), aws.ToString(in.Key), true
	case *s3.GetObjectInput:
		return aws.ToString(in.Bucket), aws.ToString(in.Key), true
	case *s3.HeadObjectInput:
		return aws.ToString(in.Bucket), aws.ToString(in.Key), true
	case *s3.DeleteObjectInput:
		return aws.ToString(in.Bucket), aws.ToString(in.Key), true
	case *s3.ListObjectsV2Input:
		return aws.ToString(in.Bucket), aws.ToString(in.Prefix), true
	case *s3.DeleteObjectsInput:
		if in.Delete != nil && len(in.Delete.Objects) > 0 {
			return aws.ToString(in.Bucket), aws.ToString(in.Delete.Objects[0].Key), true
		}
	}
	return "", "", false
}

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
					op := awsmw.GetServiceID(ctx) + ":" + awsmw.GetOperationName(ctx)
					opMu.Lock()
					class := opClass
					opMu.Unlock()
					if class != nil {
						if b, k, ok := s3Target(in.Parameters); ok {
							if c := class(b, k); c != "" {
								op += "@" + c
							}
						}
					}
					recordOp(path, op)
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
