"""Writes Confluent wire-format payloads made by Confluent's own Python serializers
(confluent-kafka's AvroSerializer and ProtobufSerializer, against its in-process
mock:// registry) for framework/tests/schema_registry.rs to decode and compare with.

    python confluent_serializers.py OUTDIR

OUTDIR gets avro.bin, protobuf.bin and ids.json ({"avro": ID, "protobuf": ID})."""

import json
import os
import sys

from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.schema_registry.protobuf import ProtobufSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

READING = """{"type":"record","name":"Reading","namespace":"freshet.test","fields":[
  {"name":"device","type":"string"},{"name":"value","type":"double"},
  {"name":"count","type":"long"},
  {"name":"note","type":["null","string"],"default":null}]}"""


def order_class():
    """freshet.test.Order { uint64 id = 1; string item = 2; repeated sint32 deltas = 3; }"""
    f = descriptor_pb2.FileDescriptorProto(
        name="freshet_test_order.proto", package="freshet.test", syntax="proto3"
    )
    m = f.message_type.add(name="Order")
    T = descriptor_pb2.FieldDescriptorProto
    m.field.add(name="id", number=1, type=T.TYPE_UINT64, label=T.LABEL_OPTIONAL)
    m.field.add(name="item", number=2, type=T.TYPE_STRING, label=T.LABEL_OPTIONAL)
    m.field.add(name="deltas", number=3, type=T.TYPE_SINT32, label=T.LABEL_REPEATED)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(f)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("freshet.test.Order"))


def main(out):
    registry = SchemaRegistryClient.new_client({"url": "mock://freshet-interop"})
    ctx = SerializationContext("readings", MessageField.VALUE)
    avro = AvroSerializer(registry, READING)(
        {"device": "sensor-7", "value": 21.5, "count": -3, "note": "calibrated"}, ctx
    )
    Order = order_class()
    proto = ProtobufSerializer(Order, registry, {"use.deprecated.format": False})(
        Order(id=42, item="kettle", deltas=[-1, 0, 300]),
        SerializationContext("orders", MessageField.VALUE),
    )
    with open(os.path.join(out, "avro.bin"), "wb") as f:
        f.write(avro)
    with open(os.path.join(out, "protobuf.bin"), "wb") as f:
        f.write(proto)
    ids = {
        "avro": registry.get_latest_version("readings-value").schema_id,
        "protobuf": registry.get_latest_version("orders-value").schema_id,
    }
    with open(os.path.join(out, "ids.json"), "w") as f:
        json.dump(ids, f)


if __name__ == "__main__":
    main(sys.argv[1])
