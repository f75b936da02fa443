"""The store side: ClickHouse through clickhouse-connect (embedded chDB or a server), the sink's
insert blocks, migrations, saved queries, the query endpoint and the status view.
"""
