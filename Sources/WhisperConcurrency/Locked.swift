#if WHISPER_TSAN
import Glibc

/// A value behind a lock — the ThreadSanitizer build's variant.
///
/// `Synchronization.Mutex` waits on a raw futex, which TSan does not model, so under TSan every
/// access it protects is reported as a race. This build (`scripts/sanitizers.sh` passes
/// `-DWHISPER_TSAN`) uses a pthread mutex, which TSan understands, behind the same `withLock`.
///
/// `@unchecked Sendable` is sound: `value` is only ever touched inside `withLock`, between
/// `pthread_mutex_lock` and `pthread_mutex_unlock` on the one mutex this instance owns, and
/// values cross in and out as `sending`, like `Mutex`'s.
public final class Locked<Value: ~Copyable>: @unchecked Sendable {
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    private var value: Value

    public init(_ initialValue: consuming sending Value) {
        mutex = .allocate(capacity: 1)
        mutex.initialize(to: pthread_mutex_t())
        pthread_mutex_init(mutex, nil)
        value = initialValue
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    public func withLock<Result: ~Copyable, E: Error>(
        _ body: (inout sending Value) throws(E) -> sending Result
    ) throws(E) -> sending Result {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body(&value)
    }
}
#else
import Synchronization

/// A value behind a lock: `Synchronization.Mutex`. The one name every target uses, so the
/// ThreadSanitizer build can swap in a lock TSan can see (the `#if WHISPER_TSAN` branch above).
public typealias Locked<Value: ~Copyable> = Mutex<Value>
#endif
