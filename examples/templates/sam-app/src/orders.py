"""Orders in MySQL: the handler a SAM app would deploy (pymysql, as such apps use)."""

import json
import os

import pymysql


def connect():
    return pymysql.connect(host=os.environ["DB_HOST"], port=int(os.environ["DB_PORT"]),
                           user=os.environ["DB_USER"], password=os.environ["DB_PASSWORD"],
                           database=os.environ["DB_NAME"], connect_timeout=5)


def create(event, context):
    with connect() as db, db.cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS orders (id INT AUTO_INCREMENT PRIMARY KEY, "
                    "item VARCHAR(100))")
        cur.execute("INSERT INTO orders (item) VALUES (%s)", (event.get("item", "?"),))
        db.commit()
        cur.execute("SELECT USER(), @@version")  # the client as the server sees it
        user, version = cur.fetchone()
    return {"created": event.get("item"), "seen_as": user, "server": version}


def list_orders(event, context):
    with connect() as db, db.cursor() as cur:
        cur.execute("SELECT item FROM orders ORDER BY id")
        items = [row[0] for row in cur.fetchall()]
        cur.execute("SELECT USER()")
        user = cur.fetchone()[0]
    return {"items": items, "seen_as": user, "body": json.dumps(items)}
