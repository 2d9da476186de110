// grpc.health.v1 and server reflection beside the gateway's services, so grpcurl and `buf curl` work without .proto files.
import { toBinary, type DescFile, type DescService } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import type * as grpc from "@grpc/grpc-js";
import { ReflectionService } from "@grpc/reflection";
import { HealthImplementation, type ServingStatus } from "grpc-health-check";
import { Health } from "../../../wire/src/gen/health/v1/health_pb.js";

/**
 * Registers `grpc.health.v1.Health` (Check and Watch) and server reflection
 * (v1 and v1alpha) for the given services, so that grpcurl and `buf curl`
 * can list and call every method without .proto files. Returns a function
 * that sets the serving status of the server ("") and of every service.
 */
export function addStandardServices(server: grpc.Server, services: readonly DescService[]): (status: ServingStatus) => void {
  const names = ["", ...services.map((s) => s.typeName)];
  const health = new HealthImplementation(Object.fromEntries(names.map((n) => [n, "NOT_SERVING"])));
  health.addToServer(server);

  // @grpc/reflection reads serialized FileDescriptorProtos from a package
  // definition; protobuf-es descriptors carry the same files. The health
  // protocol's file comes from our generated code too: the one @grpc/proto-loader
  // builds has relative type names that Go clients (grpcurl, buf curl) reject.
  const files = new Map<string, Buffer>();
  const addFile = (file: DescFile): void => {
    if (files.has(file.proto.name)) return;
    files.set(file.proto.name, Buffer.from(toBinary(FileDescriptorProtoSchema, file.proto)));
    file.dependencies.forEach(addFile);
  };
  [...services, Health].forEach((s) => addFile(s.file));
  const packageDefinition = { files: { fileDescriptorProtos: [...files.values()] } };
  new ReflectionService(packageDefinition as never).addToServer(server);

  return (status) => names.forEach((n) => health.setStatus(n, status));
}
