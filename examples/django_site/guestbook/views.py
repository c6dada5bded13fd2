"""Views of the guest book."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.templatetags.static import static
from django.urls import reverse

from .forms import SignForm


def sign(request: HttpRequest) -> HttpResponse:
    """Show the form; a valid POST is answered by a redirect (Post/Redirect/Get)."""
    form = SignForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        return redirect("thanks", name=form.cleaned_data["name"])
    return render(request, "guestbook/sign.html", {"form": form})


def thanks(request: HttpRequest, name: str) -> HttpResponse:
    return render(request, "guestbook/thanks.html", {"name": name})


def where(request: HttpRequest) -> JsonResponse:
    """How the request was understood: for checking a deployment."""
    return JsonResponse(
        {
            "reverse_sign": reverse("sign"),
            "reverse_thanks": reverse("thanks", args=["Zoë"]),
            "static": static("guestbook/style.css"),
            "path": request.path,
            "path_info": request.path_info,
            "script_name": request.META.get("SCRIPT_NAME"),
            "absolute": request.build_absolute_uri(),
            "secure": request.is_secure(),
        }
    )
