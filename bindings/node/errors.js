'use strict'
// The error family of the package, and the translation of the native module's errors into it.

const ERROR_MARK = '\u0001latchkey:'

/** The base of every error the engine throws: a stable `code` and every problem found. */
class LatchkeyError extends Error {
  constructor(message, code, problems) {
    super(message)
    this.name = new.target.name
    this.code = code
    this.problems = problems ?? [message]
  }
}
class ValidationError extends LatchkeyError {}
class NotFoundError extends LatchkeyError {}
class ConflictError extends LatchkeyError {}
class ForbiddenError extends LatchkeyError {}
class PlanRequiredError extends LatchkeyError {}
class NotAllowedError extends LatchkeyError {}
class StorageError extends LatchkeyError {}

const CLASSES = {
  VALIDATION: ValidationError,
  NOT_FOUND: NotFoundError,
  CONFLICT: ConflictError,
  FORBIDDEN: ForbiddenError,
  PLAN_REQUIRED: PlanRequiredError,
  NOT_ALLOWED: NotAllowedError,
}

/** The typed error for an error of the native module (whose message carries it as JSON after
 * a mark); any other error passes through unchanged. */
function typed(err) {
  if (err && typeof err.message === 'string' && err.message.startsWith(ERROR_MARK)) {
    const { code, message, problems } = JSON.parse(err.message.slice(ERROR_MARK.length))
    const Class = CLASSES[code] ?? StorageError
    return new Class(message, code, problems)
  }
  return err
}

function invalid(problems) {
  return new ValidationError('Validation failed', 'VALIDATION', problems)
}

/** Runs `f`, rethrowing a native error as its typed error. */
function call(f) {
  try {
    return f()
  } catch (err) {
    throw typed(err)
  }
}

module.exports = {
  LatchkeyError,
  ValidationError,
  NotFoundError,
  ConflictError,
  ForbiddenError,
  PlanRequiredError,
  NotAllowedError,
  StorageError,
  typed,
  invalid,
  call,
}
