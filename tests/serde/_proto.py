"""A protobuf message class built at import from a descriptor, as ``protoc`` would generate it.

Building it here keeps the tests free of a ``protoc`` step; the class behaves like a
generated one (``DESCRIPTOR``, ``SerializeToString``, ``FromString``).
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_F = descriptor_pb2.FieldDescriptorProto


def _order_class():
    fd = descriptor_pb2.FileDescriptorProto(
        name="sluice_tests/order.proto", package="sluicetests", syntax="proto3"
    )
    msg = fd.message_type.add(name="Order")
    msg.field.add(name="id", number=1, type=_F.TYPE_INT64, label=_F.LABEL_OPTIONAL)
    msg.field.add(name="customer", number=2, type=_F.TYPE_STRING, label=_F.LABEL_OPTIONAL)
    msg.field.add(name="amount", number=3, type=_F.TYPE_DOUBLE, label=_F.LABEL_OPTIONAL)
    pool = descriptor_pool.Default()
    try:
        pool.FindFileByName(fd.name)
    except KeyError:
        pool.Add(fd)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("sluicetests.Order"))


Order = _order_class()
