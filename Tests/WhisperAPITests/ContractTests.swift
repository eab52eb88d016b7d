import Foundation
import Testing
import WhisperAPI
import WhisperChat
import WhisperConfig
import WhisperCore
import WhisperSystem
import WhisperJSON

/// The types of the contract and their schemas must say the same thing: each type's example
/// (every field set) is encoded as whisperd encodes it and checked against the schema, and
/// every property the schema names must appear. A field added to, renamed in or removed from
/// a type without its schema (or the other way round) fails here.
@Suite struct ContractTests {
    @Test(arguments: APIModels.all.map(ModelCase.init))
    func exampleFillsEveryField_andMatchesTheSchema(_ model: ModelCase) throws {
        let empty = emptyFields(in: model.type.example)
        #expect(empty.isEmpty, "\(model.type.schemaName).example leaves \(empty) empty: set every field so the schema check sees it")
        let encoded = try JSONText.encode(model.type.example)
        let value = try JSONDecoder().decode(JSONValue.self, from: Data(encoded))
        var validator = SchemaValidator()
        validator.validate(value, against: model.type.schema, at: model.type.schemaName)
        #expect(validator.problems.isEmpty, "\(validator.problems.joined(separator: "\n"))")
        let unseen = validator.unseenProperties
        #expect(unseen.isEmpty, "the schema names properties the type does not encode: \(unseen.sorted())")
    }

    @Test(arguments: APIModels.all.map(ModelCase.init))
    func whatWhisperdEncodes_whisperctlDecodes(_ model: ModelCase) throws {
        let encoded = try JSONText.encode(model.type.example)
        let decoded = try JSONDecoder().decode(model.type, from: Data(encoded))
        #expect(try JSONText.encode(decoded) == encoded)
    }

    @Test func theDocumentedReplicaLimit_isTheRosters() {
        #expect(Route.maxReplicas == RosterLoader.maxReplicas)
    }

    @Test func theDashboardsEditableFiles_areTheCharactersFiles() {
        #expect(CharacterFiles.editable == ["character.md"] + CharacterProfile.optionalFiles)
    }

    @Test func theDocumentedNamePatterns_acceptWhatWhisperdAccepts() throws {
        let names = try Regex(Route.Parameter.namePattern)
        let profiles = try Regex(Route.Parameter.profilePattern)
        let candidates = [
            "elena", "e", "0day", "a_b-c", "Elena", "-x", "_x", "a.b", "a b", "é", "", "a/b", String(repeating: "a", count: 63),
            String(repeating: "a", count: 64), String(repeating: "a", count: 65), "Debug.2", "x%2F",
        ]
        for candidate in candidates {
            #expect((candidate.wholeMatch(of: names) != nil) == ServiceName.isValid(candidate), "name `\(candidate)`")
            #expect((candidate.wholeMatch(of: profiles) != nil) == RosterLoader.isValidProfile(candidate), "profile `\(candidate)`")
        }
    }

    @Test func aPathServesTheMethodsOfItsMostLiteralRoute() {
        #expect(Route.allowedMethods(at: "/v1/characters/elena/env", on: .control) == ["GET", "HEAD"])
        #expect(Route.allowedMethods(at: "/v1/characters/elena/restart", on: .control) == ["POST"])
        #expect(Route.allowedMethods(at: "/v1/characters/elena", on: .loopback) == ["GET", "HEAD"])
        #expect(Route.allowedMethods(at: "/v1/reload", on: .loopback) == nil)
        #expect(Route.allowedMethods(at: "/v1/characters//env", on: .control) == nil)
        #expect(Route.allowedMethods(at: "/dashboard/api/characters/elena/samples", on: .loopback) == ["GET", "HEAD"])
        #expect(Route.allowedMethods(at: "/dashboard/api/characters/elena/restart", on: .loopback) == ["POST"])
        #expect(Route.allowedMethods(at: "/dashboard/api/characters/elena/files/character.md", on: .loopback) == ["PUT"])
        #expect(Route.allowedMethods(at: "/logout", on: .loopback) == ["POST"])
        #expect(Route.allowedMethods(at: "/dashboard/api/characters/elena/samples", on: .control) == nil)
        #expect(Route.allowedMethods(at: "/v1/dashboard", on: .control) == ["GET", "HEAD"])
        #expect(Route.allowedMethods(at: "/v1/dashboard", on: .loopback) == nil)
    }

    /// The dashboard's changes are the routes of the loopback port that are not GET, and each
    /// documents the session gate; its edit takes the file as a text body.
    @Test func theDashboardsChanges_documentTheirGate_andTheEditItsBody() throws {
        let changes = Route.all.filter { $0.endpoints.contains(.loopback) && $0.method != .get }
        #expect(Set(changes.map(\.operationID)) == ["dashboardLogout", "dashboardOperate", "dashboardSaveFile"])
        for route in changes { #expect(route.answers.contains { $0.status == 403 }, "\(route.path)") }
        let document = try JSONSerialization.jsonObject(with: Data(JSONText.encode(OpenAPIDocument(for: .loopback, version: "test"))))
        let paths = try #require((document as? [String: Any])?["paths"] as? [String: [String: [String: Any]]])
        let put = try #require(paths["/dashboard/api/characters/{name}/files/{file}"]?["put"])
        let body = try #require(put["requestBody"] as? [String: Any])
        #expect(body["required"] as? Bool == true && (body["content"] as? [String: Any])?["text/plain"] != nil)
        #expect(paths["/dashboard/api/characters/{name}/samples"]?["get"]?["requestBody"] == nil)
        let page = try #require((paths["/"]?["get"]?["responses"] as? [String: [String: Any]])?["200"]?["content"] as? [String: Any])
        #expect(Array(page.keys) == ["text/html"])
    }

    @Test func aMissingRequiredField_isADecodeError_notADefault() throws {
        var object = try #require(try JSONSerialization.jsonObject(with: Data(JSONText.encode(CharacterStatus.example))) as? [String: Any])
        object["state"] = nil
        let data = try JSONSerialization.data(withJSONObject: object)
        #expect {
            try JSONDecoder().decode(CharacterStatus.self, from: data)
        } throws: { error in
            guard case DecodingError.keyNotFound(let key, _) = error else { return false }
            return key.stringValue == "state"
        }
    }

    @Test func theEncoderWritesWhatJSONTextWrites() throws {
        let typed = String(decoding: try JSONText.encode(CharacterStatus.Resources.example), as: UTF8.self)
        let untyped = String(
            decoding: JSONText.serialize(
                [
                    "memory_limit_bytes": UInt64(268_435_456), "cpus_limit": 0.5, "pids_limit": 64, "cpuset": "0-1",
                    "memory_bytes": UInt64(41_943_040), "memory_peak_bytes": UInt64(52_428_800), "cpu_seconds": 1.25, "pids": 3,
                ] as [String: Any]), as: UTF8.self)
        #expect(typed == untyped)
        let nested = String(decoding: try JSONText.encode(["b": [Double.nan, 2], "a": [1e-5]]), as: UTF8.self)
        #expect(nested == #"{"a":[1e-05],"b":[null,2.0]}"#)
    }

    @Test(arguments: Endpoint.allCases)
    func theOpenAPIDocument_hasEveryRouteAndResolvesEveryReference(_ endpoint: Endpoint) throws {
        let bytes = try JSONText.encode(OpenAPIDocument(for: endpoint, version: "test"))
        let document = try #require(try JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any])
        #expect(document["openapi"] as? String == "3.1.0")
        let paths = try #require(document["paths"] as? [String: [String: Any]])
        let schemas = try #require((document["components"] as? [String: Any])?["schemas"] as? [String: Any])
        let routes = Route.all.filter { $0.endpoints.contains(endpoint) }
        #expect(Set(paths.keys) == Set(routes.map(\.path)))
        for route in routes {
            let operation = try #require(paths[route.path]?[route.method.rawValue] as? [String: Any], "\(route.path)")
            let responses = try #require(operation["responses"] as? [String: Any])
            for answer in route.answers { #expect(responses[String(answer.status)] != nil, "\(route.path) \(answer.status)") }
            // Every `{placeholder}` of the path is a declared path parameter.
            let declared = Set(route.parameters.filter { $0.location == .path }.map(\.name))
            let placeholders = Set(route.path.split(separator: "/").filter { $0.hasPrefix("{") }.map { String($0.dropFirst().dropLast()) })
            #expect(declared == placeholders, "\(route.path)")
        }
        let text = String(decoding: bytes, as: UTF8.self)
        for match in text.matches(of: /"\$ref":"#\/components\/schemas\/([A-Za-z]+)"/) {
            #expect(schemas[String(match.1)] != nil, "unresolved $ref \(match.1)")
        }
        if endpoint == .loopback { #expect(paths["/v1/reload"] == nil && paths["/v1/paths"] == nil && paths["/v1/dashboard"] == nil) }
        if endpoint == .control { #expect(paths["/"] == nil && paths["/dashboard/api/session"] == nil && paths["/v1/dashboard"] != nil) }
    }
}

/// One type of the contract, as a test argument.
struct ModelCase: CustomTestStringConvertible, Sendable {
    let type: any APIModel.Type
    init(_ type: any APIModel.Type) { self.type = type }
    var testDescription: String { type.schemaName }
}

/// The names of optional fields left nil, and collections left empty, anywhere in `value`.
func emptyFields(in value: Any, path: String = "") -> [String] {
    var found: [String] = []
    for child in Mirror(reflecting: value).children {
        let name = path + "." + (child.label ?? "?")
        let mirror = Mirror(reflecting: child.value)
        if mirror.displayStyle == .optional {
            guard let wrapped = mirror.children.first?.value else {
                found.append(name)
                continue
            }
            found += emptyFields(in: wrapped, path: name)
        } else if mirror.displayStyle == .collection || mirror.displayStyle == .dictionary {
            if mirror.children.isEmpty, !name.hasSuffix("notEnforced") { found.append(name) }
            for element in mirror.children { found += emptyFields(in: element.value, path: name + "[]") }
        } else if mirror.displayStyle == .struct {
            found += emptyFields(in: child.value, path: name)
        }
    }
    return found
}

/// A JSON value as decoded, keeping integers apart from other numbers.
enum JSONValue: Decodable {
    case null, bool(Bool), integer(Int64), unsigned(UInt64), number(Double), string(String)
    case array([JSONValue]), object([String: JSONValue])

    init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() {
            self = .null
        } else if let flag = try? container.decode(Bool.self) {
            self = .bool(flag)
        } else if let number = try? container.decode(Int64.self) {
            self = .integer(number)
        } else if let number = try? container.decode(UInt64.self) {
            self = .unsigned(number)
        } else if let number = try? container.decode(Double.self) {
            self = .number(number)
        } else if let text = try? container.decode(String.self) {
            self = .string(text)
        } else if let array = try? container.decode([JSONValue].self) {
            self = .array(array)
        } else {
            self = .object(try container.decode([String: JSONValue].self))
        }
    }
}

/// Checks a value against a schema of the contract, as strictly as OpenAPI readers will:
/// types, required properties, no others, allowed values and minimums. `$ref`s are resolved
/// through ``APIModels/all``.
struct SchemaValidator {
    var problems: [String] = []
    /// Every property named by a schema met, as `Schema.property`, minus those seen in the value.
    private var named: Set<String> = []
    private var seen: Set<String> = []

    var unseenProperties: Set<String> { named.subtracting(seen) }

    mutating func validate(_ value: JSONValue, against schema: JSONSchema, at path: String) {
        if let reference = schema.reference {
            guard let type = APIModels.all.first(where: { "#/components/schemas/\($0.schemaName)" == reference }) else {
                problems.append("\(path): unresolved \(reference)")
                return
            }
            return validate(value, against: type.schema, at: path)
        }
        if let alternatives = schema.anyOf {
            let fits = alternatives.contains { alternative in
                var trial = SchemaValidator()
                trial.validate(value, against: alternative, at: path)
                return trial.problems.isEmpty
            }
            if !fits { problems.append("\(path): fits none of its \(alternatives.count) alternatives") }
            return
        }
        switch (schema.type, value) {
        case (nil, _): break
        case (.string?, .string(let text)):
            if let allowed = schema.allowed, !allowed.contains(text) { problems.append("\(path): `\(text)` is not one of \(allowed)") }
        case (.integer?, .integer(let number)):
            if let minimum = schema.minimum, number < minimum { problems.append("\(path): \(number) < \(minimum)") }
        case (.integer?, .unsigned), (.number?, .integer), (.number?, .unsigned), (.number?, .number), (.boolean?, .bool): break
        case (.array?, .array(let items)):
            if let itemSchema = schema.items?.schema {
                for (index, item) in items.enumerated() { validate(item, against: itemSchema, at: "\(path)[\(index)]") }
            }
        case (.object?, .object(let members)):
            let properties = schema.properties ?? [:]
            let owner = path.split(separator: ".").last.map(String.init) ?? path
            for name in properties.keys { named.insert("\(owner).\(name)") }
            for name in schema.required ?? [] where members[name] == nil { problems.append("\(path): required `\(name)` is missing") }
            for (name, member) in members {
                if let property = properties[name] {
                    seen.insert("\(owner).\(name)")
                    validate(member, against: property, at: "\(path).\(name)")
                } else {
                    switch schema.additionalProperties {
                    case .forbidden?: problems.append("\(path): `\(name)` is not in the schema")
                    case .allowed(let other)?: validate(member, against: other, at: "\(path)[\(name)]")
                    case nil: break
                    }
                }
            }
        default:
            problems.append("\(path): \(value) is not \(schema.type.map(\.rawValue) ?? "?")")
        }
    }
}
