package embeddings

import "time"

// SetProgressEvery shortens l's progress interval for tests.
func SetProgressEvery(l *Loader, d time.Duration) { l.progressEvery = d }
