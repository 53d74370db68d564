"""A FastStream service, as another team would write it, against one durable QUEUE.

Usage:
  faststream_peer.py AMQP_URL QUEUE publish JSON
      publishes JSON (a JSON object) the way a FastStream service does
  faststream_peer.py AMQP_URL QUEUE consume COUNT
      subscribes with a typed (pydantic) handler, takes COUNT messages, and prints each as
      one JSON line: {"id": ..., "customer": ..., "message_id": ..., "content_type": ...}
"""

import asyncio
import json
import sys

from faststream.rabbit import RabbitBroker, RabbitMessage, RabbitQueue
from pydantic import BaseModel

url, queue_name, mode = sys.argv[1], sys.argv[2], sys.argv[3]
queue = RabbitQueue(queue_name, durable=True)


class OrderCreated(BaseModel):
    id: int
    customer: str


async def publish(payload):
    async with RabbitBroker(url, logger=None) as broker:
        await broker.publish(payload, queue=queue)
    print("published", flush=True)


async def consume(count):
    broker = RabbitBroker(url, logger=None)
    seen = []
    done = asyncio.Event()

    @broker.subscriber(queue)
    async def handle(order: OrderCreated, message: RabbitMessage):
        seen.append(
            {
                "id": order.id,
                "customer": order.customer,
                "message_id": message.message_id,
                "content_type": message.content_type,
            }
        )
        if len(seen) >= count:
            done.set()

    async with broker:
        await broker.start()
        print("ready", flush=True)
        await asyncio.wait_for(done.wait(), timeout=30)
    for s in seen:
        print(json.dumps(s), flush=True)


if mode == "publish":
    asyncio.run(publish(json.loads(sys.argv[4])))
elif mode == "consume":
    asyncio.run(consume(int(sys.argv[4])))
else:
    sys.exit(f"unknown mode {mode}")
