/// The subset of Kubernetes' API objects `whisperd export kubernetes` writes (apps/v1,
/// batch/v1, v1), typed. Field names and nesting are the API's; properties are declared in
/// the order a person reads a manifest, and `YAMLEncoder` keeps that order.
public enum Kubernetes {}

extension Kubernetes {
    public enum Object: Encodable, Sendable {
        case configMap(ConfigMap)
        case secret(Secret)
        case service(Service)
        case statefulSet(StatefulSet)
        case deployment(Deployment)
        case job(Job)
        case cronJob(CronJob)

        public var kind: String {
            switch self {
            case .configMap: "ConfigMap"
            case .secret: "Secret"
            case .service: "Service"
            case .statefulSet: "StatefulSet"
            case .deployment: "Deployment"
            case .job: "Job"
            case .cronJob: "CronJob"
            }
        }

        public var metadata: ObjectMeta {
            switch self {
            case .configMap(let object): object.metadata
            case .secret(let object): object.metadata
            case .service(let object): object.metadata
            case .statefulSet(let object): object.metadata
            case .deployment(let object): object.metadata
            case .job(let object): object.metadata
            case .cronJob(let object): object.metadata
            }
        }

        public func encode(to encoder: any Encoder) throws {
            switch self {
            case .configMap(let object): try object.encode(to: encoder)
            case .secret(let object): try object.encode(to: encoder)
            case .service(let object): try object.encode(to: encoder)
            case .statefulSet(let object): try object.encode(to: encoder)
            case .deployment(let object): try object.encode(to: encoder)
            case .job(let object): try object.encode(to: encoder)
            case .cronJob(let object): try object.encode(to: encoder)
            }
        }
    }

    /// A string map written in the order given (labels, data, resources): deterministic output.
    public struct OrderedStrings: Codable, Hashable, Sendable {
        public var entries: [(key: String, value: String)]

        public init(_ entries: [(key: String, value: String)]) { self.entries = entries }
        /// Sorted by key.
        public init(_ dictionary: [String: String]) { self.entries = dictionary.sorted { $0.key < $1.key }.map { (key: $0.key, value: $0.value) } }

        public var isEmpty: Bool { entries.isEmpty }
        public subscript(key: String) -> String? { entries.first { $0.key == key }?.value }

        struct Key: CodingKey {
            var stringValue: String
            var intValue: Int? { nil }
            init(stringValue: String) { self.stringValue = stringValue }
            init?(intValue: Int) { nil }
        }

        public func encode(to encoder: any Encoder) throws {
            var container = encoder.container(keyedBy: Key.self)
            for entry in entries { try container.encode(entry.value, forKey: Key(stringValue: entry.key)) }
        }

        public init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: Key.self)
            entries = try container.allKeys.map { (key: $0.stringValue, value: try container.decode(String.self, forKey: $0)) }
        }

        public static func == (lhs: OrderedStrings, rhs: OrderedStrings) -> Bool {
            lhs.entries.map(\.key) == rhs.entries.map(\.key) && lhs.entries.map(\.value) == rhs.entries.map(\.value)
        }

        public func hash(into hasher: inout Hasher) {
            for entry in entries {
                hasher.combine(entry.key)
                hasher.combine(entry.value)
            }
        }
    }

    public struct ObjectMeta: Codable, Hashable, Sendable {
        public var name: String
        public var namespace: String?
        public var labels: OrderedStrings?
        public var annotations: OrderedStrings?
    }

    public struct ConfigMap: Codable, Hashable, Sendable {
        public var apiVersion = "v1"
        public var kind = "ConfigMap"
        public var metadata: ObjectMeta
        public var data: OrderedStrings
    }

    public struct Secret: Codable, Hashable, Sendable {
        public var apiVersion = "v1"
        public var kind = "Secret"
        public var metadata: ObjectMeta
        public var type = "Opaque"
        public var stringData: OrderedStrings
    }

    public struct Service: Codable, Hashable, Sendable {
        public var apiVersion = "v1"
        public var kind = "Service"
        public var metadata: ObjectMeta
        public var spec: Spec

        public struct Spec: Codable, Hashable, Sendable {
            /// `None`: headless (a StatefulSet's pods by name; DNS lists only ready pods).
            public var clusterIP: String?
            public var selector: OrderedStrings
            public var ports: [ServicePort]
        }

        public struct ServicePort: Codable, Hashable, Sendable {
            public var name: String
            public var port: Int
            /// The container port's name.
            public var targetPort: String
            public var `protocol` = "TCP"
        }
    }

    public struct LabelSelector: Codable, Hashable, Sendable {
        public var matchLabels: OrderedStrings
    }

    public struct PodTemplate: Codable, Hashable, Sendable {
        public var metadata: TemplateMeta
        public var spec: PodSpec

        public struct TemplateMeta: Codable, Hashable, Sendable {
            public var labels: OrderedStrings
            public var annotations: OrderedStrings?
        }
    }

    public struct StatefulSet: Codable, Hashable, Sendable {
        public var apiVersion = "apps/v1"
        public var kind = "StatefulSet"
        public var metadata: ObjectMeta
        public var spec: Spec

        public struct Spec: Codable, Hashable, Sendable {
            public var serviceName: String
            public var replicas: Int
            /// `Parallel`: replicas (gateway shards) start together, as on one host.
            public var podManagementPolicy: String
            public var selector: LabelSelector
            public var template: PodTemplate
            public var volumeClaimTemplates: [PersistentVolumeClaim]?
        }
    }

    public struct PersistentVolumeClaim: Codable, Hashable, Sendable {
        public var metadata: Meta
        public var spec: Spec

        public struct Meta: Codable, Hashable, Sendable {
            public var name: String
        }

        public struct Spec: Codable, Hashable, Sendable {
            public var accessModes: [String]
            public var resources: Resources
        }

        public struct Resources: Codable, Hashable, Sendable {
            public var requests: OrderedStrings
        }
    }

    public struct Deployment: Codable, Hashable, Sendable {
        public var apiVersion = "apps/v1"
        public var kind = "Deployment"
        public var metadata: ObjectMeta
        public var spec: Spec

        public struct Spec: Codable, Hashable, Sendable {
            public var replicas: Int
            public var selector: LabelSelector
            /// `Recreate`: never two processes of one character at once (one Discord token).
            public var strategy: Strategy
            public var template: PodTemplate
        }

        public struct Strategy: Codable, Hashable, Sendable {
            public var type: String
        }
    }

    public struct Job: Codable, Hashable, Sendable {
        public var apiVersion = "batch/v1"
        public var kind = "Job"
        public var metadata: ObjectMeta
        public var spec: Spec

        public struct Spec: Codable, Hashable, Sendable {
            public var backoffLimit: Int
            public var template: PodTemplate
        }
    }

    public struct CronJob: Codable, Hashable, Sendable {
        public var apiVersion = "batch/v1"
        public var kind = "CronJob"
        public var metadata: ObjectMeta
        public var spec: Spec

        public struct Spec: Codable, Hashable, Sendable {
            public var schedule: String
            public var timeZone: String?
            /// `Forbid`: a run still going when the next is due is not doubled (as on one host).
            public var concurrencyPolicy: String
            /// Missed runs: how late one may still start (seconds); catch_up: false keeps it short.
            public var startingDeadlineSeconds: Int?
            public var jobTemplate: Template
        }

        public struct Template: Codable, Hashable, Sendable {
            public var spec: Job.Spec
        }
    }

    public struct PodSpec: Codable, Hashable, Sendable {
        /// `Always` for characters; `Never`/`OnFailure` for jobs.
        public var restartPolicy: String?
        /// No API token in the pod: a character has no business with the cluster's API.
        public var automountServiceAccountToken = false
        /// No `<SERVICE>_PORT=tcp://…` variables in the character's environment.
        public var enableServiceLinks = false
        public var terminationGracePeriodSeconds: Int
        public var securityContext: PodSecurityContext
        public var initContainers: [Container]?
        public var containers: [Container]
        public var volumes: [Volume]
    }

    public struct PodSecurityContext: Codable, Hashable, Sendable {
        public var runAsNonRoot = true
        public var runAsUser: Int
        public var runAsGroup: Int
        /// The group that owns the volumes (the state PVC), so the non-root user can write them.
        public var fsGroup: Int
        public var seccompProfile = SeccompProfile()

        public struct SeccompProfile: Codable, Hashable, Sendable {
            public var type = "RuntimeDefault"
        }
    }

    public struct Container: Codable, Hashable, Sendable {
        public var name: String
        public var image: String
        public var command: [String]
        public var workingDir: String?
        public var env: [EnvVar]?
        public var ports: [ContainerPort]?
        public var resources: ResourceRequirements?
        public var securityContext: SecurityContext
        public var readinessProbe: Probe?
        public var livenessProbe: Probe?
        public var volumeMounts: [VolumeMount]?
    }

    public struct EnvVar: Codable, Hashable, Sendable {
        public var name: String
        public var value: String?
        public var valueFrom: Source?

        public struct Source: Codable, Hashable, Sendable {
            public var secretKeyRef: KeyRef?
            public var fieldRef: FieldRef?
        }

        public struct KeyRef: Codable, Hashable, Sendable {
            public var name: String
            public var key: String
        }

        public struct FieldRef: Codable, Hashable, Sendable {
            public var fieldPath: String
        }
    }

    public struct ContainerPort: Codable, Hashable, Sendable {
        public var name: String
        public var containerPort: Int
        public var `protocol` = "TCP"
    }

    public struct ResourceRequirements: Codable, Hashable, Sendable {
        public var limits: OrderedStrings?
        public var requests: OrderedStrings?
    }

    public struct SecurityContext: Codable, Hashable, Sendable {
        public var allowPrivilegeEscalation = false
        public var readOnlyRootFilesystem = true
        public var runAsNonRoot = true
        public var capabilities = Capabilities()

        public struct Capabilities: Codable, Hashable, Sendable {
            public var drop = ["ALL"]
        }
    }

    public struct Probe: Codable, Hashable, Sendable {
        public var httpGet: HTTPGet
        public var periodSeconds: Int
        public var timeoutSeconds: Int
        public var failureThreshold: Int

        public struct HTTPGet: Codable, Hashable, Sendable {
            public var path: String
            /// The container port's name.
            public var port: String
        }
    }

    public struct VolumeMount: Codable, Hashable, Sendable {
        public var name: String
        public var mountPath: String
        public var readOnly: Bool?
    }

    public struct Volume: Codable, Hashable, Sendable {
        public var name: String
        public var configMap: ConfigMapSource?
        public var secret: SecretSource?
        public var emptyDir: EmptyDir?

        public struct ConfigMapSource: Codable, Hashable, Sendable {
            public var name: String
            public var items: [KeyToPath]?
        }

        public struct SecretSource: Codable, Hashable, Sendable {
            public var secretName: String
        }

        public struct KeyToPath: Codable, Hashable, Sendable {
            public var key: String
            public var path: String
        }

        public struct EmptyDir: Codable, Hashable, Sendable {
            public var medium: String?
            public var sizeLimit: String?
        }
    }
}
