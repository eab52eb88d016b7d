/// What a service waits for before it starts (roster `after:`), in Compose's terms.
public enum DependencyCondition: String, Hashable, Sendable, CaseIterable {
    /// Compose `service_started`: the dependency's process is running (ready or not).
    case started
    /// Compose `service_healthy`: the dependency is ready (sd_notify, HTTP or its `ready:` mode).
    /// For a job — what the list form of `after:` always meant — it has succeeded.
    case healthy
    /// Compose `service_completed_successfully`: a job that exited 0 (this revision).
    case completedSuccessfully = "completed_successfully"
}

/// One entry of `after:`. The list form (`after: [postgres]`) is `healthy`, required, no restart.
public struct Dependency: Hashable, Sendable {
    public var name: ServiceName
    public var condition: DependencyCondition
    /// Compose `required: false`: a dependency that is not in the roster, or has given up
    /// (failed, crash-looping), does not hold the service back.
    public var required: Bool
    /// Compose `restart: true`: when the dependency is restarted by the operator or by a reload,
    /// this service is restarted after it. A crash of the dependency restarts nothing else.
    public var restartsWithIt: Bool

    public init(_ name: ServiceName, condition: DependencyCondition = .healthy, required: Bool = true, restartsWithIt: Bool = false) {
        self.name = name
        self.condition = condition
        self.required = required
        self.restartsWithIt = restartsWithIt
    }
}
