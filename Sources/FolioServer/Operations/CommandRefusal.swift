/// An operator command's refusal whose description is the whole message: the
/// `folio` commands print it as one `error:` line and exit non-zero, with no
/// stack and no type name.
public protocol CommandRefusal: Error, CustomStringConvertible {}
