//! Services that use `opentelemetry::global`, captured per test.
//!
//! A global tracer provider is one per process, so tests running in
//! parallel would mix their spans in it. [`install`] sets, once, a global
//! provider whose processor routes each span to the [`SpanCapture`] that
//! owns its trace, and the W3C propagators (`traceparent`, `tracestate`,
//! `baggage`) as the global propagator.
//!
//! A trace belongs to the capture in whose [`SpanCapture::scope`] (async)
//! or [`SpanCapture::enter`] (the current thread) its root span started.
//! Every later span of that trace follows its trace id, wherever it starts:
//! in a task spawned without the scope, or in another service that
//! extracted the context from a record's headers. Only root spans need
//! the scope; a root started outside every scope is counted in
//! [`unrouted_spans`] and dropped.
//!
//! A span's service is its tracer's name (`global::tracer("billing")`).
//! [`install`], [`unrouted_spans`] and [`ScopeGuard`] are also at the
//! crate root.
//!
//! **When a scope and an `enter` disagree, the task's
//! [`scope`](SpanCapture::scope) wins**, whichever began last: a root span
//! started inside a `scope` future belongs to that capture even on a thread
//! that [`enter`](SpanCapture::enter)ed another. A thread's `enter` is seen
//! by every task polled on that thread, so it only decides for code outside
//! any `scope` (synchronous code, tests without a runtime). Nested scopes of
//! one kind: the innermost wins.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use kafka_trace_harness::SpanCapture;
//! use opentelemetry::global;
//! use opentelemetry::trace::Tracer;
//!
//! let (entered, scoped) = (SpanCapture::new(), SpanCapture::new());
//! let _thread = entered.enter();
//! global::tracer("sync").in_span("outside the scope", |_| {});
//! scoped
//!     .scope(async {
//!         let _inner = entered.enter(); // entered last, still loses
//!         global::tracer("async").in_span("inside the scope", |_| {});
//!     })
//!     .await;
//!
//! assert_eq!(entered.forest().named("outside the scope").count(), 1);
//! assert_eq!(entered.forest().named("inside the scope").count(), 0);
//! assert_eq!(scoped.forest().named("inside the scope").count(), 1);
//! # }
//! ```
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use kafka_trace_harness::SpanCapture;
//! use opentelemetry::global;
//! use opentelemetry::trace::{Tracer, TraceContextExt};
//!
//! kafka_trace_harness::capture::global::install();
//! let capture = SpanCapture::new();
//!
//! capture
//!     .scope(async {
//!         // The service only knows the global tracer.
//!         global::tracer("billing").in_span("charge", |cx| {
//!             global::tracer("ledger").in_span("book", |_| {});
//!         });
//!     })
//!     .await;
//!
//! let forest = capture.forest();
//! assert_eq!(forest.len(), 2);
//! assert_eq!(forest.named("book").next().unwrap().service(), "ledger");
//! # }
//! ```

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use opentelemetry::propagation::TextMapCompositePropagator;
use opentelemetry::trace::{Span as _, TraceId};
use opentelemetry::{Context, global};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};
use opentelemetry_sdk::trace::{SdkTracerProvider, Span, SpanData, SpanProcessor};
use rustc_hash::FxHashMap;

use super::{SpanCapture, lock};

/// What one capture's sink is, seen from the router.
type SinkRef = Weak<super::SpanSink>;

tokio::task_local! {
    static TASK_SCOPE: SinkRef;
}

thread_local! {
    static THREAD_SCOPE: RefCell<Vec<SinkRef>> = const { RefCell::new(Vec::new()) };
}

/// The process-wide router.
struct Router {
    /// Owner of each trace seen, until its capture is gone.
    routes: Mutex<Routes>,
    unrouted: AtomicU64,
}

#[derive(Default)]
struct Routes {
    owners: FxHashMap<TraceId, SinkRef>,
    /// Size after the last sweep of dead owners: sweeping again at twice
    /// that keeps the cost linear.
    swept_at: usize,
}

static ROUTER: OnceLock<Router> = OnceLock::new();

fn router() -> &'static Router {
    ROUTER.get_or_init(|| Router {
        routes: Mutex::default(),
        unrouted: AtomicU64::new(0),
    })
}

/// Sets the global tracer provider (routing spans to captures) and the
/// global propagator (W3C trace context and baggage). Idempotent: every
/// test may call it. Setting another global provider afterwards replaces
/// the router, and captures then see no global span.
pub fn install() {
    static INSTALLED: OnceLock<SdkTracerProvider> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let provider = SdkTracerProvider::builder()
            .with_span_processor(RoutingProcessor)
            .build();
        global::set_tracer_provider(provider.clone());
        global::set_text_map_propagator(TextMapCompositePropagator::new(vec![
            Box::new(TraceContextPropagator::new()),
            Box::new(BaggagePropagator::new()),
        ]));
        provider
    });
}

/// Spans of the global provider that no capture owned (their root started
/// outside every scope), since the process started.
pub fn unrouted_spans() -> u64 {
    router().unrouted.load(Ordering::Relaxed)
}

/// The innermost scope of the running task, else of this thread.
fn current_scope() -> Option<SinkRef> {
    TASK_SCOPE
        .try_with(Weak::clone)
        .ok()
        .or_else(|| THREAD_SCOPE.with(|scopes| scopes.borrow().last().cloned()))
}

/// Keeps the current thread in a capture's scope until dropped.
#[derive(Debug)]
#[must_use = "the scope ends when the guard is dropped"]
pub struct ScopeGuard {
    // Not Send: it pops the thread-local stack of the thread it was made on.
    _not_send: std::marker::PhantomData<*const ()>,
}

impl Drop for ScopeGuard {
    fn drop(&mut self) {
        THREAD_SCOPE.with(|scopes| {
            scopes.borrow_mut().pop();
        });
    }
}

impl SpanCapture {
    /// Runs `future` in this capture's scope: a global-provider root span
    /// started while it runs makes its whole trace this capture's, even on
    /// a thread in another capture's [`enter`](Self::enter) (the scope
    /// wins; see [the module](self)). Tasks
    /// it spawns are outside the scope; wrap them too if they start roots
    /// (spans that continue a trace need no scope). Calls [`install`].
    pub async fn scope<F: Future>(&self, future: F) -> F::Output {
        install();
        TASK_SCOPE.scope(Arc::downgrade(self.sink()), future).await
    }

    /// Puts the current thread in this capture's scope until the guard
    /// drops (for synchronous code; async code uses
    /// [`scope`](Self::scope), which wins over it: see
    /// [the module](self)). Calls [`install`].
    pub fn enter(&self) -> ScopeGuard {
        install();
        THREAD_SCOPE.with(|scopes| scopes.borrow_mut().push(Arc::downgrade(self.sink())));
        ScopeGuard {
            _not_send: std::marker::PhantomData,
        }
    }
}

/// The global provider's processor: each span to the capture owning its
/// trace.
#[derive(Debug)]
struct RoutingProcessor;

impl SpanProcessor for RoutingProcessor {
    fn on_start(&self, span: &mut Span, _cx: &Context) {
        let trace = span.span_context().trace_id();
        let mut routes = lock(&router().routes);
        if routes.owners.contains_key(&trace) {
            return;
        }
        if let Some(owner) = current_scope() {
            routes.owners.insert(trace, owner);
            if routes.owners.len() >= 2 * routes.swept_at.max(1024) {
                routes.owners.retain(|_, owner| owner.strong_count() > 0);
                routes.swept_at = routes.owners.len();
            }
        }
    }

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        let owner = lock(&router().routes)
            .owners
            .get(&span.span_context.trace_id())
            .and_then(Weak::upgrade);
        match owner {
            Some(sink) => {
                let service = Arc::from(span.instrumentation_scope.name());
                sink.push(service, span);
            }
            None => {
                router().unrouted.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}
