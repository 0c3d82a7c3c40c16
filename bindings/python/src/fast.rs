//! `Engine.verify` as a raw CPython fastcall function: the one call a server makes per request.
//!
//! pyo3's generated glue for a method matches keyword arguments generically: it reads each
//! keyword name's UTF-8 text and compares it with every parameter name. For `verify`, whose
//! core work is under 100 ns, that cost about 20 ns of a 185 ns call (interleaved runs,
//! BENCHMARKS.md). Here the function is bound to its engine (CPython's `m_self`), and a
//! keyword name is first matched by identity with the interned parameter names: the names a
//! call site spells out are interned constants of its code object, so the text is read only
//! for names built at run time. Everything after the matching — the argument rules, the
//! decision, the result object — is the same safe code as any other method.
//!
//! This is the crate's only `unsafe` code. Invariants: [`VERIFY`] is immutable and `'static`
//! (CPython only reads a method definition); CPython calls the function only on an attached
//! thread, with `args` holding `nargs` positional values followed by one value per name in
//! `kwnames` (a tuple of strings, or null), all borrowed for the duration of the call; `slf` is
//! the object the function was bound to in [`bound_verify`], which holds a strong reference to
//! it for the function's lifetime.

#![allow(unsafe_code)]

use std::ffi::CStr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::ptr;

use latchkey::VerifyRequest;
use pyo3::exceptions::{PySystemError, PyTypeError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyString, PyTuple};
use pyo3::{Borrowed, ffi};

use crate::{Decision, Engine, closed, invalid};

/// A method definition CPython may read from any thread.
struct MethodDef(ffi::PyMethodDef);

// SAFETY: the definition is never written, and its pointers are to `'static` text and a function.
unsafe impl Sync for MethodDef {}

/// The text signature (read by `inspect.signature` and `help`) and the docstring.
const DOC: &CStr = c"verify($self, credential, *, area=None, action=None, ip=None, path='/')
--

Decides one request. Bad arguments (an unknown area or action, an unreadable IP) are a
`ValidationError`; a refused request is a `Decision` with `allowed` false.";

static VERIFY: MethodDef = MethodDef(ffi::PyMethodDef {
    ml_name: c"verify".as_ptr(),
    ml_meth: ffi::PyMethodDefPointer {
        PyCFunctionFastWithKeywords: verify,
    },
    ml_flags: ffi::METH_FASTCALL | ffi::METH_KEYWORDS,
    ml_doc: DOC.as_ptr(),
});

/// `verify` bound to `engine`.
pub(crate) fn bound_verify<'py>(engine: &Bound<'py, Engine>) -> PyResult<Bound<'py, PyAny>> {
    let py = engine.py();
    // SAFETY: `VERIFY` is `'static` and only read through the pointer; the new function takes
    // its own strong reference to `engine` (its `m_self`), which `verify` relies on.
    unsafe {
        let function = ffi::PyCFunction_NewEx(
            ptr::addr_of!(VERIFY.0).cast_mut(),
            engine.as_ptr(),
            ptr::null_mut(),
        );
        Bound::from_owned_ptr_or_err(py, function)
    }
}

/// The parameters, in the order of [`Arguments`]' slots.
const PARAMETERS: [&str; 5] = ["credential", "area", "action", "ip", "path"];

/// [`PARAMETERS`] as interned strings, the objects a call site's keyword names are.
static INTERNED: PyOnceLock<[Py<PyString>; 5]> = PyOnceLock::new();

/// The argument values of one call by parameter, borrowed from CPython's argument array.
#[derive(Default)]
struct Arguments<'a, 'py>([Option<Borrowed<'a, 'py, PyAny>>; 5]);

unsafe extern "C" fn verify(
    slf: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY (this block): see the module's invariants.
    let py = unsafe { Python::assume_attached() };
    let engine = unsafe { Borrowed::from_ptr(py, slf) };
    let names = unsafe { Borrowed::from_ptr_or_opt(py, kwnames) };
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let names = match names {
            Some(names) => Some(names.cast::<PyTuple>()?),
            None => None,
        };
        let positional = nargs.max(0) as usize;
        let count = positional + names.map_or(0, |names| names.len());
        let value = |i: usize| {
            debug_assert!(i < count);
            // SAFETY: `i` is below `nargs` + the number of keyword names.
            unsafe { Borrowed::from_ptr(py, *args.add(i)) }
        };
        let mut arguments = Arguments::default();
        match positional {
            0 => {}
            1 => arguments.0[0] = Some(value(0)),
            n => {
                return Err(PyTypeError::new_err(format!(
                    "verify() takes 1 positional argument but {n} were given"
                )));
            }
        }
        if let Some(names) = names {
            let interned =
                INTERNED.get_or_init(py, || PARAMETERS.map(|p| PyString::intern(py, p).unbind()));
            for (i, name) in names.iter_borrowed().enumerate() {
                arguments.place(interned, name, value(positional + i))?;
            }
        }
        decide(engine, &arguments)
    }));
    match outcome {
        Ok(Ok(decision)) => decision.into_ptr(),
        Ok(Err(err)) => {
            err.restore(py);
            ptr::null_mut()
        }
        Err(_) => {
            // The payload may hold a secret's text; it is not shown.
            PySystemError::new_err("latchkey: verify failed unexpectedly").restore(py);
            ptr::null_mut()
        }
    }
}

impl<'a, 'py> Arguments<'a, 'py> {
    /// Puts a keyword argument in its slot; an unknown or repeated name is a `TypeError`, as
    /// for any Python function.
    fn place(
        &mut self,
        interned: &[Py<PyString>; 5],
        name: Borrowed<'_, 'py, PyAny>,
        value: Borrowed<'a, 'py, PyAny>,
    ) -> PyResult<()> {
        let slot = match interned
            .iter()
            .position(|known| known.as_ptr() == name.as_ptr())
        {
            Some(i) => i,
            None => {
                let name = name.cast::<PyString>()?;
                let text = name.to_str()?;
                PARAMETERS
                    .iter()
                    .position(|known| *known == text)
                    .ok_or_else(|| {
                        PyTypeError::new_err(format!(
                            "verify() got an unexpected keyword argument '{text}'"
                        ))
                    })?
            }
        };
        if self.0[slot].replace(value).is_some() {
            return Err(PyTypeError::new_err(format!(
                "verify() got multiple values for argument '{}'",
                PARAMETERS[slot]
            )));
        }
        Ok(())
    }

    /// `None` or the text of the `str` argument in `slot`; any other type is a `TypeError`.
    fn text(&self, slot: usize) -> PyResult<Option<&str>> {
        let Some(value) = &self.0[slot] else {
            return Ok(None);
        };
        let value: &Bound<'py, PyAny> = value;
        if value.is_none() {
            return Ok(None);
        }
        match value.cast::<PyString>() {
            Ok(text) => Ok(Some(text.to_str()?)),
            Err(_) => Err(PyTypeError::new_err(format!(
                "verify() argument '{}' must be str or None, not {}",
                PARAMETERS[slot],
                value.get_type().name()?
            ))),
        }
    }
}

fn decide<'py>(
    engine: Borrowed<'_, 'py, PyAny>,
    arguments: &Arguments<'_, 'py>,
) -> PyResult<Bound<'py, Decision>> {
    let py = engine.py();
    let engine = engine.cast::<Engine>()?;
    if arguments.0[0].is_none() {
        return Err(PyTypeError::new_err(
            "verify() missing 1 required positional argument: 'credential'",
        ));
    }
    let credential = arguments.text(0)?;
    let (area, action, ip) = (arguments.text(1)?, arguments.text(2)?, arguments.text(3)?);
    let path = arguments.text(4)?.unwrap_or("/");
    let (permission, ip) =
        latchkey::verify_arguments(area, action, ip).map_err(|e| invalid(py, e.problems()))?;
    // The read guard, not an `Arc` clone: a verify never releases the GIL, so it is held for
    // the few hundred nanoseconds of the decision only.
    let slot = engine.get().engine.read();
    let Some(engine) = slot.as_ref() else {
        return Err(closed(py));
    };
    let inner = engine.verify(&VerifyRequest {
        credential,
        permission,
        ip,
        path,
    });
    drop(slot);
    Bound::new(py, Decision { inner })
}
