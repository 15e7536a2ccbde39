//! The network stack, shared by every link and by interrupt handlers.

use core::cell::RefCell;

/// An embedded-nal stack behind a `critical-section` mutex.
///
/// Each link borrows the stack for one non-blocking call at a time, inside a
/// critical section, so the stack may also be used from an interrupt handler
/// (through [`SharedStack::with`]) and by several sessions. Waiting happens
/// outside the critical section.
pub struct SharedStack<S> {
    cell: critical_section::Mutex<RefCell<S>>,
}

impl<S> SharedStack<S> {
    /// Wrap `stack`; `const` so that it can be placed in a `static`.
    pub const fn new(stack: S) -> Self {
        SharedStack {
            cell: critical_section::Mutex::new(RefCell::new(stack)),
        }
    }

    /// Run `f` on the stack inside a critical section. `None` if the stack is
    /// already in use further up the call chain (`f` called `with` again).
    pub fn with<T>(&self, f: impl FnOnce(&mut S) -> T) -> Option<T> {
        critical_section::with(|cs| {
            let mut stack = self.cell.borrow(cs).try_borrow_mut().ok()?;
            Some(f(&mut stack))
        })
    }

    /// Take the stack back.
    pub fn into_inner(self) -> S {
        self.cell.into_inner().into_inner()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_use_is_refused_not_a_panic() {
        let stack = SharedStack::new(5u32);
        let nested = stack.with(|v| {
            *v += 1;
            stack.with(|_| ())
        });
        assert_eq!(nested, Some(None));
        assert_eq!(stack.with(|v| *v), Some(6));
        assert_eq!(stack.into_inner(), 6);
    }
}
