"""URLs of the guest book."""

from __future__ import annotations

from django.urls import path

from . import views

urlpatterns = [
    path("", views.sign, name="sign"),
    path("thanks/<str:name>/", views.thanks, name="thanks"),
    path("where/", views.where, name="where"),
]
