// Package apierr turns bootchain errors into gRPC statuses that say what was wrong:
// InvalidArgument with the offending field in errdetails.BadRequest, NotFound naming
// the object, and store conflicts as Aborted.
package apierr

import (
	"context"
	"errors"
	"fmt"

	"github.com/bootchain/bootchain/pkg/store"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// FieldError is a validation failure of one request field.
type FieldError struct {
	Field, Description string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Description }

// Field returns a *FieldError; use it from validation code shared with non-gRPC paths.
func Field(field, format string, args ...any) error {
	return &FieldError{Field: field, Description: fmt.Sprintf(format, args...)}
}

// InvalidArgument is an InvalidArgument status naming field.
func InvalidArgument(field, format string, args ...any) error {
	return fieldStatus(codes.InvalidArgument, &FieldError{Field: field, Description: fmt.Sprintf(format, args...)})
}

// FailedPrecondition is a FailedPrecondition status naming field (for "a second
// pending job for a machine": the request is well-formed, the state refuses it).
func FailedPrecondition(field, format string, args ...any) error {
	return fieldStatus(codes.FailedPrecondition, &FieldError{Field: field, Description: fmt.Sprintf(format, args...)})
}

func fieldStatus(code codes.Code, fe *FieldError) error {
	st := status.New(code, fe.Error())
	if code == codes.FailedPrecondition {
		if d, err := st.WithDetails(&errdetails.PreconditionFailure{Violations: []*errdetails.PreconditionFailure_Violation{{Type: "STATE", Subject: fe.Field, Description: fe.Description}}}); err == nil {
			return d.Err()
		}
		return st.Err()
	}
	if d, err := st.WithDetails(&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: fe.Field, Description: fe.Description}}}); err == nil {
		return d.Err()
	}
	return st.Err()
}

// NotFound says which object is missing.
func NotFound(kind, name string) error {
	return status.Errorf(codes.NotFound, "%s %q not found", kind, name)
}

// FromError maps an error to a status: statuses pass through, a *FieldError becomes
// InvalidArgument, store errors map to NotFound/AlreadyExists/Aborted, context errors
// to Canceled/DeadlineExceeded, anything else to Internal with its message.
func FromError(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	var fe *FieldError
	switch {
	case errors.As(err, &fe):
		return fieldStatus(codes.InvalidArgument, fe)
	case errors.Is(err, store.ErrNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, store.ErrExists):
		return status.Error(codes.AlreadyExists, err.Error())
	case errors.Is(err, store.ErrConflict):
		return status.Error(codes.Aborted, err.Error())
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	}
	return status.Error(codes.Internal, err.Error())
}

// FieldOf returns the field named by an InvalidArgument or FailedPrecondition
// status, or "".
func FieldOf(err error) string {
	st, ok := status.FromError(err)
	if !ok {
		return ""
	}
	for _, d := range st.Details() {
		switch d := d.(type) {
		case *errdetails.BadRequest:
			if len(d.FieldViolations) > 0 {
				return d.FieldViolations[0].Field
			}
		case *errdetails.PreconditionFailure:
			if len(d.Violations) > 0 {
				return d.Violations[0].Subject
			}
		}
	}
	return ""
}
