package bootapi_test

import "google.golang.org/protobuf/types/known/fieldmaskpb"

func mask(paths ...string) *fieldmaskpb.FieldMask { return &fieldmaskpb.FieldMask{Paths: paths} }
