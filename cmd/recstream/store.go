package main

import (
	"context"
	"fmt"
	"net/url"

	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/recstream/recstream/internal/awsenv"
	"github.com/recstream/recstream/internal/objstore"
)

// openStore opens an object-store location: s3://bucket[/prefix] (through the configured S3
// client) or file:///dir. from names the flag or config key the location came from, so a bad
// value is a usage error that says where to fix it.
func openStore(ctx context.Context, app *App, from, location string) (objstore.Store, error) {
	u, err := url.Parse(location)
	if err != nil || (u.Scheme != "s3" && u.Scheme != "file") {
		return nil, usageError{fmt.Sprintf("%s must be an s3://bucket[/prefix] or file:///dir URL, got %q", from, location)}
	}
	var client *s3.Client
	if u.Scheme == "s3" {
		if client, err = awsenv.S3(ctx, app.Config.S3); err != nil {
			return nil, err
		}
	}
	s, err := objstore.Open(location, client)
	if err != nil {
		return nil, usageError{fmt.Sprintf("%s: %v", from, err)}
	}
	return s, nil
}
