"""The dev servers the tests start: what must hold for every start, not only the lucky ones."""

from devstack.apache_kafka import cluster_id


def test_a_new_kafka_cluster_id_is_never_taken_for_an_option() -> None:
    # One random id in 64 starts with "-" and made the storage tool refuse to format; 2,000 draws
    # would meet such an id with near certainty.
    ids = [cluster_id() for _ in range(2000)]
    assert not [i for i in ids if i.startswith("-")]
    assert all(len(i) == 22 for i in ids)
