import CWhisperLinux

// The C shim's names, gathered so the rest of the module reads as Swift.
@inline(__always) func whisperMonotonic() -> Int64 { whisper_monotonic_ns() }
@inline(__always) func whisperRealtime() -> Int64 { whisper_realtime_ns() }
