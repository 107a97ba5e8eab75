package inference

import "testing"

// LabExamples exposes the real lab training data to the external end-to-end tests.
func LabExamples(t testing.TB) []Example { return labExamples(t) }
