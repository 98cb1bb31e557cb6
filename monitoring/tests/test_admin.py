"""The worker heartbeat admin: read-only rows that only the heartbeat task writes; stale ones deletable."""

from __future__ import annotations

import datetime as dt

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse
from django.utils import timezone

from monitoring.models import WorkerHeartbeat
from tests.admin_helpers import run_action
from tests.factories import make_user

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:monitoring_workerheartbeat_changelist")


@pytest.fixture
def stale():
    return WorkerHeartbeat.objects.create(
        hostname="celery@gone", last_seen=timezone.now() - dt.timedelta(hours=3, minutes=5)
    )


def change_url(beat: WorkerHeartbeat) -> str:
    return reverse("admin:monitoring_workerheartbeat_change", args=[beat.pk])


def test_the_list_shows_each_worker_with_the_age_of_its_last_heartbeat(client, admin_user, stale):
    client.force_login(admin_user)

    response = client.get(CHANGELIST)

    assert response.status_code == 200
    html = response.content.decode()
    assert "celery@gone" in html
    assert "3:05:00 ago" in html or "3:05:01 ago" in html


def test_nobody_can_add_a_heartbeat(client, admin_user):
    client.force_login(admin_user)

    page = client.get(reverse("admin:monitoring_workerheartbeat_add"))
    posted = client.post(
        reverse("admin:monitoring_workerheartbeat_add"),
        {"hostname": "celery@fake", "last_seen_0": "2030-01-01", "last_seen_1": "00:00:00"},
    )

    assert (page.status_code, posted.status_code) == (403, 403)
    assert not WorkerHeartbeat.objects.exists()
    assert reverse("admin:monitoring_workerheartbeat_add") not in client.get(CHANGELIST).content.decode()


def test_a_superuser_sees_a_heartbeat_but_cannot_change_it(client, admin_user, stale):
    client.force_login(admin_user)
    before = stale.last_seen

    page = client.get(change_url(stale))
    posted = client.post(
        change_url(stale),
        {"hostname": "celery@renamed", "last_seen_0": "2030-01-01", "last_seen_1": "00:00:00"},
    )

    assert page.status_code == 200
    assert 'name="hostname"' not in page.content.decode()
    assert posted.status_code == 403
    stale.refresh_from_db()
    assert (stale.hostname, stale.last_seen) == ("celery@gone", before)


def test_a_superuser_deletes_a_stale_heartbeat(client, admin_user, stale):
    client.force_login(admin_user)

    response = run_action(client, "monitoring_workerheartbeat", "delete_selected", [stale.pk], post="yes")

    assert response.status_code == 200
    assert not WorkerHeartbeat.objects.exists()


def test_staff_without_the_delete_permission_cannot_delete_a_heartbeat(client, stale):
    viewer = make_user("viewer", staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_workerheartbeat"))
    client.force_login(viewer)

    listed = client.get(CHANGELIST)
    deleted = client.post(
        reverse("admin:monitoring_workerheartbeat_delete", args=[stale.pk]), {"post": "yes"}
    )

    assert listed.status_code == 200
    assert "delete_selected" not in listed.content.decode()
    assert deleted.status_code == 403
    assert WorkerHeartbeat.objects.filter(pk=stale.pk).exists()
