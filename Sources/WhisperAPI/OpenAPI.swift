/// The OpenAPI 3.1 document of one endpoint, made from ``Route/all`` and the schemas the
/// payload types give: nothing in it is written twice.
public struct OpenAPIDocument: Encodable, Sendable {
    public struct Info: Encodable, Sendable {
        var title: String
        var version: String
        var description: String
    }

    struct Parameter: Encodable, Sendable {
        var name: String
        var location: String
        var required: Bool
        var description: String
        var schema: JSONSchema
        var example: String?

        enum CodingKeys: String, CodingKey {
            case name, required, description, schema, example
            case location = "in"
        }
    }

    struct MediaType: Encodable, Sendable {
        var schema: JSONSchema
    }

    struct Response: Encodable, Sendable {
        var description: String
        var content: [String: MediaType]?
    }

    struct RequestBody: Encodable, Sendable {
        var required = true
        var content: [String: MediaType]
    }

    struct Operation: Encodable, Sendable {
        var operationId: String
        var summary: String
        var parameters: [Parameter]?
        var requestBody: RequestBody?
        var responses: [String: Response]
    }

    struct Components: Encodable, Sendable {
        var schemas: [String: JSONSchema]
    }

    public var openapi = "3.1.0"
    public var info: Info
    var paths: [String: [String: Operation]]
    var components: Components

    public init(for endpoint: Endpoint, version: String) {
        let routes = Route.all.filter { $0.endpoints.contains(endpoint) }
        info = Info(
            title: endpoint == .control ? "whisperd control socket" : "whisperd HTTP port (read-only API and web dashboard)", version: version,
            description: Self.describe(endpoint))
        var paths: [String: [String: Operation]] = [:]
        var types: [String: any APIModel.Type] = [:]
        for route in routes {
            var responses: [String: Response] = [:]
            let transport = Route.transportAnswers(endpoint)
            for answer in route.answers + transport.filter({ answer in !route.answers.contains { $0.status == answer.status } }) {
                let content: [String: MediaType]?
                switch answer.body {
                case .json(let type):
                    Self.collect(type, into: &types)
                    // The route's own body, or (overloaded, malformed) the HTTP layer's error.
                    let layer = transport.first { $0.status == answer.status && answer.description != $0.description }
                    let schema: JSONSchema =
                        if layer != nil, ObjectIdentifier(type) != ObjectIdentifier(APIError.self) {
                            .anyOf([.reference(type), .reference(APIError.self)])
                        } else {
                            .reference(type)
                        }
                    content = ["application/json": MediaType(schema: schema)]
                case .openAPI:
                    content = ["application/json": MediaType(schema: .map(of: JSONSchema(nil, nil), "An OpenAPI 3.1 document."))]
                case .text(let mediaType):
                    content = [mediaType: MediaType(schema: .string())]
                }
                responses[String(answer.status)] = Response(description: answer.description, content: content)
            }
            let parameters = route.parameters.map {
                Parameter(
                    name: $0.name, location: $0.location.rawValue, required: $0.location == .path, description: $0.description,
                    schema: $0.schema, example: $0.example)
            }
            paths[route.path, default: [:]][route.method.rawValue] = Operation(
                operationId: route.operationID, summary: route.summary, parameters: parameters.isEmpty ? nil : parameters,
                requestBody: route.requestBody.map { RequestBody(content: [$0: MediaType(schema: .string())]) }, responses: responses)
        }
        self.paths = paths
        components = Components(schemas: types.mapValues { $0.schema })
    }

    /// `type` and every type its schema refers to, by schema name.
    static func collect(_ type: any APIModel.Type, into types: inout [String: any APIModel.Type]) {
        guard types[type.schemaName] == nil else { return }
        types[type.schemaName] = type
        for nested in APIModels.referenced(by: type) { collect(nested, into: &types) }
    }

    static func describe(_ endpoint: Endpoint) -> String {
        switch endpoint {
        case .loopback:
            "whisperd's loopback HTTP port: read-only (GET and HEAD) but for the web dashboard's changes under `/dashboard/api/` and `/logout`, which need a logged-in session (the cookie `/login` sets), its `X-CSRF-Token` header and the dashboard's `Origin`; a method a path does not list is refused with 405 (control goes through the control socket). Paths not listed answer 404."
        case .control:
            "whisperd's control socket (`<runtime>/control.sock`, HTTP/1.1 over a Unix socket; only root, whisperd's owner and group `whisperd` may connect). GET/HEAD read, POST changes; any other method answers 405. Paths not listed answer 404."
        }
    }
}

/// Every payload type of the contract, and which types each refers to.
public enum APIModels {
    public static let all: [any APIModel.Type] = [
        APIError.self, CharacterStatus.self, CharacterStatus.LastExit.self, CharacterStatus.Tenant.self,
        CharacterStatus.Resources.self, CharacterList.self, DashboardLogin.self, DashboardSession.self, ResourceSamples.self,
        ResourceSamples.Point.self, CharacterFiles.self, CharacterFiles.File.self, SavedCharacterFile.self, DashboardAction.self, HealthReport.self, HealthReport.Supervisor.self, CgroupReport.self,
        Paths.self, Incident.self, IncidentList.self, EnvironmentReport.self, EnvironmentReport.Variable.self, ReloadResult.self,
        RosterRejected.self, ScaleResult.self, ProfileResult.self, CharacterStatus.Schedule.self, CharacterStatus.Replica.self, ReexecScheduled.self,
    ]

    /// The types named by `$ref`s in `type`'s schema.
    public static func referenced(by type: any APIModel.Type) -> [any APIModel.Type] {
        let names = references(in: type.schema)
        return all.filter { names.contains("#/components/schemas/\($0.schemaName)") }
    }

    static func references(in schema: JSONSchema) -> Set<String> {
        var found: Set<String> = []
        if let reference = schema.reference { found.insert(reference) }
        for property in (schema.properties ?? [:]).values { found.formUnion(references(in: property)) }
        if let items = schema.items { found.formUnion(references(in: items.schema)) }
        if case .allowed(let values) = schema.additionalProperties { found.formUnion(references(in: values)) }
        for alternative in schema.anyOf ?? [] { found.formUnion(references(in: alternative)) }
        return found
    }
}
