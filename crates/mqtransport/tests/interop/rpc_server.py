"""The RPC server of the RabbitMQ tutorials (pika), as another team would run it: it consumes
QUEUE, answers each request's body n with fib(n) as plain text to its reply_to, and exits after
COUNT requests. Usage: rpc_server.py AMQP_URL QUEUE COUNT"""

import sys

import pika


def fib(n):
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


url, queue, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
connection = pika.BlockingConnection(pika.URLParameters(url))
channel = connection.channel()
channel.queue_declare(queue=queue, auto_delete=True)
served = 0


def on_request(ch, method, props, body):
    global served
    response = fib(int(body))
    ch.basic_publish(
        exchange="",
        routing_key=props.reply_to,
        properties=pika.BasicProperties(correlation_id=props.correlation_id),
        body=str(response),
    )
    ch.basic_ack(delivery_tag=method.delivery_tag)
    served += 1
    if served >= count:
        ch.stop_consuming()


channel.basic_qos(prefetch_count=1)
channel.basic_consume(queue=queue, on_message_callback=on_request)
print("ready", flush=True)
channel.start_consuming()
connection.close()
